"""The first training step whose loss or gradient norm is not finite, found without a host-device sync per step.

Each step adds two tiny device-side operations: the module reports whether its losses (and, where
``optimizer.grad_clip`` computes it, the gradient norm) were finite, and :class:`NonFiniteGuard` keeps the first
step where they were not in a device tensor (``torch.where``, no ``.item()``). The host reads that tensor only where
it must know: before every checkpoint, before every validation of the fit, at the end of the fit and at the
logging steps (where Lightning reads the logged values back anyway). So the step it reports is exact even when it is
not a logging step, and a checkpoint is never written after it. Before each checkpoint the weights and the
optimizer state are also checked themselves (one sync per checkpoint), which also catches a non-finite gradient that
no clipping measured: such a step's loss is finite, but the weights it leaves are not.

Step numbers count optimizer steps from 1, as ``trainer.global_step`` and the checkpoints do: step N is the N-th
update, and the checkpoint of step N holds the weights after it.
"""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L
import torch
from torch import Tensor

from vqbench.errors import NonFiniteLossError

#: What became non-finite, by the code NonFiniteGuard records (a bit each).
WHAT = {1: "the training loss", 2: "the gradient norm", 3: "the training loss and the gradient norm"}
FIX = "Lower optimizer.lr, set optimizer.grad_clip=1.0, or try trainer.precision=32-true"


def all_finite(tensors: Iterable[Tensor | None], device: torch.device | str = "cpu") -> Tensor:
    """One 0-dim boolean tensor: every value of every tensor is finite (None entries are skipped); ``device`` holds
    the answer when no tensor is given. No host-device sync or copy."""
    flags = [torch.isfinite(t).all() for t in tensors if t is not None]
    return torch.stack(flags).all() if flags else torch.ones((), dtype=torch.bool, device=device)


class NonFiniteGuard(L.Callback):
    """Records the first step whose loss or gradient norm is not finite and stops the fit there (see the module).

    The module's ``training_step`` returns ``{"loss", "loss_finite", "grad_finite"}`` (0-dim booleans on the
    device). Must come before LastCheckpoint in the trainer's callbacks, so that a step's flag is recorded before
    that step's checkpoint is written.
    """

    def __init__(self) -> None:
        self.first_step: Tensor | None = None  # long: the first bad step, 0 while none
        self.what: Tensor | None = None  # long: WHAT's code for that step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss_finite, grad_finite = _flags(outputs)
        if self.first_step is None:
            self.first_step = torch.zeros((), dtype=torch.long, device=loss_finite.device)
            self.what = torch.zeros((), dtype=torch.long, device=loss_finite.device)
        code = (~loss_finite).long() + 2 * (~grad_finite).long()
        first = (code > 0) & (self.first_step == 0)
        self.first_step = torch.where(first, trainer.global_step, self.first_step)
        self.what = torch.where(first, code, self.what)
        if trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            self.check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.check(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        """Raises NonFiniteLossError naming the first bad step, if there was one (one host read)."""
        if self.first_step is None:
            return
        step = int(self.first_step)
        if step:
            what = WHAT[int(self.what)]
            raise NonFiniteLossError(
                f"{what} became non-finite at step {step}; no checkpoint of step {step} or later was written, the "
                f"checkpoints already written are kept. {FIX}",
                step=step,
            )

    def check_before_save(self, trainer: L.Trainer) -> None:
        """check(), then the weights and the optimizer state themselves: a checkpoint holds finite values only."""
        self.check(trainer)
        module = trainer.lightning_module
        tensors = list(module.state_dict().values())
        for optimizer in trainer.optimizers:
            for state in optimizer.state.values():
                tensors += [v for v in state.values() if isinstance(v, Tensor) and v.is_floating_point()]
        if not bool(all_finite(t for t in tensors if t.is_floating_point())):
            raise NonFiniteLossError(
                f"the weights or the optimizer state became non-finite by step {trainer.global_step} (the losses "
                "were finite: a non-finite gradient that no optimizer.grad_clip measured); the checkpoints already "
                f"written are kept. {FIX}",
                step=trainer.global_step,
            )


def _flags(outputs) -> tuple[Tensor, Tensor]:
    if isinstance(outputs, dict) and "loss_finite" in outputs:
        return outputs["loss_finite"], outputs["grad_finite"]
    loss = outputs["loss"] if isinstance(outputs, dict) else outputs
    finite = torch.isfinite(loss).all()
    return finite, torch.ones_like(finite)

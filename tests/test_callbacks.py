"""NonFiniteGuard (training/nonfinite.py) on a stand-in trainer: the first bad step is kept on the device and
reported exactly at the next point where the host reads it."""

from types import SimpleNamespace

import pytest
import torch

from vqbench.errors import NonFiniteLossError
from vqbench.training.nonfinite import NonFiniteGuard, all_finite


def _trainer(step: int) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, log_every_n_steps=10)


def _outputs(loss: float, grad_norm: float | None = None) -> dict:
    loss = torch.tensor(loss)
    norms = [None if grad_norm is None else torch.tensor(grad_norm)]
    return {"loss": loss, "loss_finite": all_finite([loss]), "grad_finite": all_finite(norms)}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_the_first_non_finite_step_is_reported_exactly_at_the_next_logging_step(bad):
    guard = NonFiniteGuard()
    guard.on_train_batch_end(_trainer(12), None, _outputs(0.5), None, 0)
    guard.on_train_batch_end(_trainer(13), None, _outputs(bad), None, 0)  # not a logging step: no host read
    guard.on_train_batch_end(_trainer(14), None, _outputs(bad), None, 0)
    guard.on_train_batch_end(_trainer(15), None, _outputs(0.5), None, 0)
    with pytest.raises(NonFiniteLossError, match="training loss became non-finite at step 13;.*optimizer.lr") as e:
        guard.on_train_batch_end(_trainer(20), None, _outputs(0.5), None, 0)
    assert e.value.step == 13


def test_a_non_finite_gradient_norm_is_named():
    guard = NonFiniteGuard()
    guard.on_train_batch_end(_trainer(3), None, _outputs(0.5, float("inf")), None, 0)
    with pytest.raises(NonFiniteLossError, match="gradient norm became non-finite at step 3") as e:
        guard.check(_trainer(4))
    assert e.value.step == 3


def test_finite_steps_pass():
    guard = NonFiniteGuard()
    for step in (1, 10, 20):
        guard.on_train_batch_end(_trainer(step), None, _outputs(0.5, 1.0), None, 0)
    guard.check(_trainer(20))
    NonFiniteGuard().check(_trainer(0))  # before the first step

"""What a training or an evaluation cost: wall time, images per second and peak memory, for metrics.json.

Peak memory is the accelerator's when the run used CUDA (``torch.cuda.max_memory_allocated``: tensors only, not the
allocator's cache), else the process's peak resident set size (``ru_maxrss``: everything the process touched,
Python and the data loader's main process included, not its worker processes).
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field

import lightning as L
import torch


def _peak_host_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


@dataclass
class CostMeter:
    """Times a piece of work and reads the peak memory over it: ``start()``, the work, ``finish(images)``."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    started: float = 0.0

    def start(self) -> CostMeter:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.started = time.perf_counter()
        return self

    def finish(self, images: int, **extra: float | int) -> dict[str, float | int | str]:
        """``images``: how many images the work processed (training: steps x batch x processes)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak, kind = torch.cuda.max_memory_allocated(self.device) / 2**20, "cuda max_memory_allocated"
        else:
            peak, kind = _peak_host_mib(), "host peak resident set size (ru_maxrss)"
        seconds = time.perf_counter() - self.started
        return {
            "wall_time_s": round(seconds, 3),
            **extra,
            "images": images,
            "images_per_second": images / seconds if seconds > 0 else 0.0,
            "peak_memory_mib": round(peak, 1),
            "peak_memory_kind": kind,
        }


class TrainingCost(L.Callback):
    """Lightning callback measuring ``fit``'s training loop: from its first to its last
    step, in steps of this process (a resumed run counts the steps it ran), images = steps x batch x processes."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.meter: CostMeter | None = None
        self.first_step = 0
        self.result: dict[str, float | int | str] | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.first_step = trainer.global_step
        self.meter = CostMeter(trainer.strategy.root_device).start()

    def on_train_end(self, trainer, pl_module) -> None:
        if self.meter is not None:
            steps = trainer.global_step - self.first_step
            self.result = self.meter.finish(steps * self.batch_size * trainer.world_size, steps=steps)

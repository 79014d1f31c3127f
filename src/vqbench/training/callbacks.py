"""TensorBoard image grid of originals vs reconstructions, a histogram of code usage, the PNG pairs of
``metrics.save_reconstructions``, and the per-step seeding that makes a resumed training exact."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torchvision
from lightning.pytorch.loggers import TensorBoardLogger

from vqbench.metrics import to_uint8
from vqbench.metrics.codebook_health import level_codebooks, nearest_code_distances
from vqbench.randomness import derived_seed, seed_all_generators
from vqbench.training.module import TokenizerModule


def _tensorboard(trainer: L.Trainer):
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class ReconstructionGrid(L.Callback):
    """After each validation, logs the first ``num_images`` val images (top rows) above their reconstructions."""

    def __init__(self, num_images: int = 8):
        self.num_images = num_images
        self.images = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and outputs is not None and self.num_images > 0:  # 0: no grid
            n = min(self.num_images, batch.shape[0])
            self.images = (batch[:n].detach(), outputs[:n].detach())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: TokenizerModule) -> None:
        writer = _tensorboard(trainer)
        if writer is None or self.images is None or trainer.sanity_checking:
            return
        originals, reconstructions = self.images
        grid = torchvision.utils.make_grid(
            pl_module.to_unit_range(torch.cat([originals, reconstructions]).float()).cpu(), nrow=originals.shape[0]
        )
        writer.add_image("val/reconstructions", grid, trainer.global_step)


class CodeUsageHistogram(L.Callback):
    """After each validation, TensorBoard histograms of the codebook: how often each token id was used over the
    validation split (``val/code_usage``; per level ``val/code_usage/level_r`` for a residual VQ), the norms of the
    code vectors (``codebook/code_norm``) and each code's distance to its nearest other code
    (``codebook/nearest_code_distance``), per level as ``.../level_r``."""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: TokenizerModule) -> None:
        writer = _tensorboard(trainer)
        metrics = pl_module.metrics["val"]
        if writer is None or "codebook" not in metrics or trainer.sanity_checking:
            return
        step = trainer.global_step
        usage = metrics["codebook"]
        histograms = {"val/code_usage": usage.counts}
        if usage.levels > 1:
            histograms |= {f"val/code_usage/level_{r}": counts for r, counts in enumerate(usage.level_counts)}
        for tag, counts in histograms.items():
            counts = counts.detach().cpu()
            token_ids = torch.repeat_interleave(torch.arange(counts.numel()), counts)
            if token_ids.numel():
                writer.add_histogram(tag, token_ids, step, bins=min(counts.numel(), 512))
        codebooks = level_codebooks(pl_module.tokenizer.quantizer)
        for level, codebook in enumerate(codebooks or []):
            suffix = f"/level_{level}" if len(codebooks) > 1 else ""
            writer.add_histogram(f"codebook/code_norm{suffix}", codebook.norm(dim=1).cpu(), step)
            if codebook.shape[0] > 1:
                distances = nearest_code_distances(codebook).cpu()
                writer.add_histogram(f"codebook/nearest_code_distance{suffix}", distances, step)


class SeedEachStep(L.Callback):
    """Seeds every generator (Python, NumPy, torch CPU and CUDA) before each training step from (seed, step, rank).

    Whatever a step draws (Gumbel noise, dead-code restarts, dropout) then depends only on the step, not on how many
    numbers were drawn before it, so a run resumed from a checkpoint draws exactly what the uninterrupted run drew
    (see ``vqbench.randomness``). Processes draw from different streams.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        seed_all_generators(derived_seed(self.seed, "step", trainer.global_step, trainer.global_rank))


class SaveReconstructions(L.Callback):
    """Writes each test image and its reconstruction as ``NNNNNN_original.png`` / ``NNNNNN_reconstruction.png``,
    NNNNNN being the image's index in the test split (also under multi-process evaluation, whose sampler gives
    image i to process i mod N)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.seen = 0

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.seen = 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        originals = to_uint8(pl_module.to_unit_range(batch.float())).cpu()
        reconstructions = to_uint8(pl_module.to_unit_range(outputs.float())).cpu()
        for original, reconstruction in zip(originals, reconstructions, strict=True):
            index = trainer.global_rank + trainer.world_size * self.seen
            torchvision.io.write_png(original, str(self.directory / f"{index:06d}_original.png"))
            torchvision.io.write_png(reconstruction, str(self.directory / f"{index:06d}_reconstruction.png"))
            self.seen += 1

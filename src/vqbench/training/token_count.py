"""The effective codebook size over chosen splits (``metrics.effective_size_splits``), in a pass of its own.

LL-VQ-VAE (AGKhalil/ll-vq-vae) reports the number of distinct quantized vectors over its train and val loaders
(``experiments/evaluate_checkpoint.py`` calls ``count_uniques`` of ``experiments/utils.py`` on both, the model in
eval mode), and the number of vectors it quantized. This pass does the same on any splits: every image of each split
goes through the encoder and the quantizer in eval mode, and it reports

    effective_codebook_size = number of distinct token vectors      quantized_vectors = images x tokens per image

Distinct token ids are distinct quantized vectors (a code, or the lattice point b * k). With ``flip`` each image is
flipped at random first, as the original's loaders do: one transform with RandomHorizontalFlip serves all its splits.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from vqbench.data.module import ImageDataModule, random_horizontal_flip, to_model_range
from vqbench.metrics import CodebookUsage, DistinctTokens
from vqbench.models.tokenizer import Tokenizer
from vqbench.randomness import derived_seed


class TokenCount(L.LightningModule):
    def __init__(self, tokenizer: Tokenizer, data: ImageDataModule, splits: Sequence[str], flip: bool = False):
        super().__init__()
        self.tokenizer = tokenizer
        self.data = data
        self.splits = tuple(splits)
        self.flip = flip
        size = tokenizer.quantizer.codebook_size
        self.distinct = CodebookUsage(size) if size is not None else DistinctTokens()
        self.vectors = 0

    def test_dataloader(self) -> list[DataLoader]:
        rank, world_size = self.trainer.global_rank, self.trainer.world_size
        return [self.data.evaluation_dataloader(split, rank, world_size) for split in self.splits]

    def on_after_batch_transfer(self, batch: Tensor, dataloader_idx: int) -> Tensor:
        return to_model_range(batch, self.data.pixel_mean, self.data.pixel_std) if batch.dtype == torch.uint8 else batch

    def on_test_epoch_start(self) -> None:
        self.distinct.reset()
        self.vectors = 0

    def test_step(self, images: Tensor, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.flip:
            seed = derived_seed(self.data.seed, "count_flip", dataloader_idx, batch_idx, self.global_rank)
            images = random_horizontal_flip(images, seed)
        indices = self.tokenizer.encode(images).indices
        self.distinct.update(indices)
        self.vectors += indices.shape[:3].numel()

    def on_test_epoch_end(self) -> None:
        vectors = torch.tensor(float(self.vectors), dtype=torch.float64, device=self.device)
        values = {"test/quantized_vectors": self.trainer.strategy.reduce(vectors, reduce_op="sum")}
        size = self.distinct.compute().get("effective_codebook_size")
        if size is not None:  # None: more distinct vectors than DistinctTokens keeps (the dense lattice)
            values["test/effective_codebook_size"] = size.double()
        self.log_dict(values)

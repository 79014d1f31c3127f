"""EMA statistics under torch.distributed: two CPU processes (gloo) with half-batches each must end with exactly the
codebook that one process computes from the whole batch, and dead-code restarts must keep the ranks identical."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vqbench.quantizers import EMAVectorQuantizer

STEPS = 3


def _batches(dim: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(123)
    # Some codes get no vectors, so restarts happen when enabled.
    return [torch.randn(4, dim, 6, 6, generator=generator) * 0.3 for _ in range(STEPS)]


def _quantizer(threshold: float) -> EMAVectorQuantizer:
    """Counts start at one, so that only codes which stop winning fall below a restart threshold under one (with
    the default zero counts every code would start dead)."""
    torch.manual_seed(0)
    return EMAVectorQuantizer(32, 8, decay=0.9, initial_count=1.0, dead_code_threshold=threshold).train()


def _worker(rank: int, world_size: int, init_file: str, threshold: float, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(1000 + rank)  # different local randomness: restarts must still agree
        q = _quantizer(threshold)
        for batch in _batches(8):
            half = batch.shape[0] // world_size
            q(batch[rank * half : (rank + 1) * half])
        torch.save({k: v.clone() for k, v in q.state_dict().items()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _run_two_ranks(tmp_path, threshold: float) -> list[dict]:
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), threshold, str(tmp_path)), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


def test_two_ranks_with_half_batches_equal_one_process_with_the_whole_batch(tmp_path):
    rank0, rank1 = _run_two_ranks(tmp_path, threshold=0.0)
    single = _quantizer(0.0)
    for batch in _batches(8):
        single(batch)
    for key in ("codebook", "ema_counts", "ema_sums"):
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0)
        torch.testing.assert_close(rank0[key], single.state_dict()[key], rtol=1e-5, atol=1e-6)


def test_dead_code_restart_keeps_ranks_identical(tmp_path):
    rank0, rank1 = _run_two_ranks(tmp_path, threshold=0.95)
    for key in ("codebook", "ema_counts", "ema_sums"):
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0)
    # restarts happened: some codes left the positions that the same updates without restarts give
    without_restarts = _quantizer(0.0)
    for batch in _batches(8):
        without_restarts(batch)
    moved = (rank0["codebook"] - without_restarts.codebook).abs().amax(1) > 1e-4
    assert 0 < int(moved.sum()) < 32

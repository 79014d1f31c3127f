"""k-means initialisation and plain-VQ dead-code restart under torch.distributed: two CPU processes (gloo), each with
its own half of the batch and its own random state, must end with identical codebooks; the k-means must be the one
of both halves together."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vqbench.quantizers import VectorQuantizer
from vqbench.quantizers.kmeans import initial_centroids, kmeans

K, D, STEPS = 16, 4, 4
EPS = torch.finfo(torch.float32).eps


def _batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(123)
    return [torch.randn(4, D, 5, 5, generator=generator) * (1 + i) for i in range(STEPS)]


def _rows(z: torch.Tensor) -> torch.Tensor:
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def _quantizer(mode: str) -> VectorQuantizer:
    torch.manual_seed(0)
    if mode == "kmeans":
        return VectorQuantizer(K, D, init="kmeans", kmeans_iterations=5, kmeans_batches=2).train()
    return VectorQuantizer(K, D, dead_code_threshold=0.8, usage_decay=0.9).train()


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """Both modes in one process group (one spawn: each costs seconds)."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        for mode in ("kmeans", "dead_codes"):
            q = _quantizer(mode)
            torch.manual_seed(1000 + rank)  # different local randomness: the ranks must still agree
            for batch in _batches():
                half = batch.shape[0] // world_size
                q(batch[rank * half : (rank + 1) * half])
            state = {k: v.clone() for k, v in q.state_dict().items()}
            torch.save(state, os.path.join(out_dir, f"{mode}_rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("ddp_codebook")
    mp.spawn(_worker, args=(2, str(out / "init"), str(out)), nprocs=2, join=True)
    return {mode: [torch.load(out / f"{mode}_rank{r}.pt") for r in range(2)] for mode in ("kmeans", "dead_codes")}


def test_kmeans_init_is_identical_on_both_ranks_and_the_kmeans_of_all_their_vectors(two_ranks):
    rank0, rank1 = two_ranks["kmeans"]
    torch.testing.assert_close(rank0["codebook"], rank1["codebook"], rtol=0, atol=0)
    assert bool(rank0["kmeans.done"]) and bool(rank1["kmeans.done"])
    # Rank 0 drew the initial centroids from its own two half-batches (seed 1000) and broadcast them; the Lloyd steps
    # then ran on the all-reduced sums of all four half-batches.
    batches = _batches()[:2]
    torch.manual_seed(1000)
    initial = initial_centroids(torch.cat([_rows(b[:2]) for b in batches]), K)
    everything = torch.cat([_rows(b[:2]) for b in batches] + [_rows(b[2:]) for b in batches])
    expected, _ = kmeans(everything, K, 5, initial=initial)
    # per-rank partial sums added by all-reduce instead of one sum: rounding of a sum over 200 rows of size ~3
    torch.testing.assert_close(rank0["codebook"], expected, rtol=200 * EPS, atol=200 * EPS * 3)


def test_plain_vq_dead_code_restart_keeps_ranks_identical(two_ranks):
    rank0, rank1 = two_ranks["dead_codes"]
    for key in ("codebook", "usage_counts"):
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0)
    torch.manual_seed(0)
    untouched = VectorQuantizer(K, D).codebook.detach()
    assert (rank0["codebook"] != untouched).any(1).sum() > 0  # restarts happened

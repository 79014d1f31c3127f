"""Issue 24: codebook health. Usage and dead codes over the last N training steps (per level for residual VQ), the
whole-split histogram's usage and perplexity, TensorBoard histograms of usage, code norms and nearest-code
distances, and the collapse warning, read back from metrics.json and the TensorBoard event files."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY, run_cli
from vqbench.metrics import CodebookUsage
from vqbench.metrics.codebook_health import RecentCodeUsage, level_codebooks, nearest_code_distances
from vqbench.quantizers import ResidualVectorQuantizer, VectorQuantizer


def test_recent_usage_counts_the_codes_of_the_last_n_steps():
    usage = RecentCodeUsage(codebook_size=8)
    chosen = {0: [0, 1], 1: [2], 2: [3, 3], 3: [4], 4: [1]}
    for step, ids in chosen.items():
        usage.update(torch.tensor(ids).view(1, 1, -1), step)
    # after 5 steps, the last 2 (steps 3 and 4) chose codes 4 and 1
    summary = usage.summary(step=5, window=2)
    assert summary["codebook_usage_recent"] == 2 / 8 and summary["dead_codes"] == 6
    assert usage.summary(step=5, window=5)["dead_codes"] == 8 - 5  # 0..4 used since step 0; 5, 6, 7 never
    assert usage.summary(step=5, window=1)["dead_codes"] == 7


def test_a_collapsed_codebook_has_one_code_and_perplexity_one():
    """Every code identical: every vector's nearest code is the first (ties resolve to the lowest index)."""
    quantizer = VectorQuantizer(codebook_size=16, dim=4)
    with torch.no_grad():
        quantizer.codebook.copy_(quantizer.codebook[:1].expand(16, -1))
    indices = quantizer(torch.randn(3, 4, 5, 5)).indices
    evaluation, recent = CodebookUsage(16), RecentCodeUsage(16)
    evaluation.update(indices)
    recent.update(indices, step=0)
    values = evaluation.compute()
    assert values["used_codes"] == 1 and values["unused_codes"] == 15 and values["perplexity"] == 1.0
    assert recent.summary(step=1, window=10)["dead_codes"] == 15
    assert (nearest_code_distances(level_codebooks(quantizer)[0]) == 0).all()


def test_levels_of_a_residual_quantizer_have_their_own_histograms():
    g = torch.Generator().manual_seed(0)
    indices = torch.randint(0, 6, (2, 3, 3, 3), generator=g)
    indices[..., 2] = 5  # the last level collapsed onto one code
    usage = CodebookUsage(8, levels=3)
    usage.update(indices[:1])
    usage.update(indices[1:])  # the histogram is summed over batches: perplexity does not depend on the batch size
    values = usage.compute()
    for level in range(3):
        counts = np.bincount(indices[..., level].flatten().numpy(), minlength=8)
        p = counts[counts > 0] / counts.sum()
        assert values[f"codebook_usage/level_{level}"] == (counts > 0).sum() / 8
        assert float(values[f"perplexity/level_{level}"]) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-12)
    assert float(values["perplexity/level_2"]) == 1.0
    recent = RecentCodeUsage(8, levels=3)
    recent.update(indices, step=0)
    summary = recent.summary(step=1, window=1)
    assert summary["dead_codes/level_2"] == 7
    assert summary["dead_codes"] == sum(summary[f"dead_codes/level_{r}"] for r in range(3))
    rvq = ResidualVectorQuantizer(codebook_size=8, dim=4, num_stages=3)
    assert [c.shape for c in level_codebooks(rvq)] == [(8, 4)] * 3


def test_nearest_code_distances_in_chunks_equal_the_full_matrix():
    codebook = torch.randn(37, 5, generator=torch.Generator().manual_seed(0))
    full = torch.cdist(codebook, codebook) + torch.diag(torch.full((37,), float("inf")))
    assert torch.equal(nearest_code_distances(codebook, chunk=8), full.min(1).values)


@pytest.mark.slow
def test_collapse_is_warned_and_counted_in_metrics_json_and_tensorboard(tmp_path):
    """A tiny residual-VQ training: 3 steps of 4 images of 4 x 4 tokens choose at most 3 x 64 = 192 of the 512
    codes of each level, below the 0.9 fraction whatever the weights, so the warning must fire."""
    out = tmp_path / "run"
    result = run_cli(
        *TINY,
        "quantizer=rvq",
        "metrics.health_steps=3",
        "metrics.usage_warning_fraction=0.9",
        "metrics.usage_warning_after=0",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert "codebook collapse? at step 3" in result.stdout + result.stderr
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    levels = [metrics[f"train/dead_codes/level_{r}"] for r in range(4)]
    assert all(512 - 192 <= dead <= 511 for dead in levels)
    assert metrics["train/dead_codes"] == sum(levels)
    assert metrics["train/codebook_usage_recent"] == pytest.approx(1 - sum(levels) / 2048)
    for r in range(4):
        assert metrics[f"val/perplexity/level_{r}"] >= 1 and f"val/codebook_usage/level_{r}" in metrics

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    histograms = set(events.Tags()["histograms"])
    for r in range(4):
        expected = {f"val/code_usage/level_{r}", f"codebook/code_norm/level_{r}"}
        assert expected | {f"codebook/nearest_code_distance/level_{r}"} <= histograms
    logged = events.Scalars("train/dead_codes")
    assert logged[-1].step == 3 and logged[-1].value == metrics["train/dead_codes"]


def _steps() -> torch.Tensor:
    """Ids of 6 training steps x 2 processes x 2 levels x 5 tokens, codes 0..15."""
    return torch.randint(0, 16, (6, 2, 5, 2), generator=torch.Generator().manual_seed(3))


def _health(ids_per_step, levels: int = 2) -> dict[str, float]:
    recent, usage = RecentCodeUsage(16, levels=levels), CodebookUsage(16, levels=levels)
    for step, ids in enumerate(ids_per_step):
        recent.update(ids.view(1, 1, -1, levels), step)
        usage.update(ids.view(1, 1, -1, levels))
    values = recent.summary(step=6, window=3) | usage.compute()
    return {key: float(value) for key, value in values.items()}


def _health_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        result = _health([ids[rank] for ids in _steps()])
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes: a minute on a shared CPU
def test_two_processes_count_every_token_once(tmp_path):
    """Under DDP each process sees its own tokens; the reduced state (max of last steps, sum of histograms) must
    equal one process that saw both processes' tokens."""
    mp.spawn(_health_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    single = _health([ids.reshape(-1, 2) for ids in _steps()])
    assert ranks[0] == ranks[1] == pytest.approx(single, rel=1e-12)

"""Records Doraemonzzz/vector-quantize's EMA quantizer (the ImageNet-128 table's EMA row) under DDP with 2 processes.

    git -C MIRROR archive 3f0178ceb7362afc41ee2c3e8378b128038ddc24 | tar -x -C /tmp/vector-quantize
    python tests/reference/vector_quantize/record_ddp.py /tmp/vector-quantize

The table's EMA row was trained with 8 processes (``scripts/train_ema.sh``: ``torch.distributed.launch
--nproc_per_node 8 train.py --quantizer ema``), the model wrapped in ``DistributedDataParallel(model,
find_unused_parameters=True)`` with the default ``broadcast_buffers=True`` (``train.py`` line 79). What that does to
``VectorQuantizeEMA`` (``quantizers/vq.py``) is recorded here on 2 CPU processes over gloo, one file per rank and
the checkpoint as ``train.py`` writes it:

- the counts (``embed_onehot_sum``, contiguous) are all-reduced in place; the sums (``embed_sum``, a transpose) are
  all-reduced through a ``.contiguous()`` copy, so they stay rank-local;
- DDP copies rank 0's buffers (``cluster_size``, ``embed_avg``) to every rank at each forward;
- the codebook (``embed.weight``) is a parameter that gets no gradient: DDP broadcasts it once, at construction, so
  each rank's codebook follows its own sums;
- the checkpoint is written where ``is_main_process() == 0`` (lines 174-176): by every rank but 0. With 2 processes
  that is rank 1, whose ``model.state_dict()`` is recorded as ``saved_state``.

The model is the quantizer behind one 1x1 convolution (DDP needs a parameter with a gradient, and the gradient
all-reduce of the convolution is part of the step), trained by plain SGD on commitment + MSE to a fixed target; each
rank sees its own latents. ``ema_ddp.pt`` holds, per rank and step: the token ids, the commitment loss, the codebook,
counts and sums after the step and the convolution's weight after the optimizer step.

Only ``quantizers/vq.py`` is imported (its git blob id is checked, as ``record.py`` does for every file it imports).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))
from tests.reference.vector_quantize.record import BLOBS, COMMIT, git_blob_id  # noqa: E402

WORLD_SIZE = 2
#: The row's quantizer (quantizers/vq.py defaults: decay 0.99, eps 1e-5, commitment_cost 1), narrowed.
CODEBOOK_SIZE, DIM = 16, 8
DECAY, EPS = 0.99, 1e-5
STEPS, BATCH, SIDE = 4, 2, 4
LR = 0.1
SEED = 0
CODE_SCALE = 0.01


def inputs() -> dict[str, torch.Tensor]:
    """Initial weights and every rank's latents and targets (the same on every rank; each takes its own part)."""
    generator = torch.Generator().manual_seed(SEED)
    conv = torch.eye(DIM).reshape(DIM, DIM, 1, 1) + 0.1 * torch.randn(DIM, DIM, 1, 1, generator=generator)
    latents = torch.randn(STEPS, WORLD_SIZE, BATCH, DIM, SIDE, SIDE, generator=generator)
    latents[:, 1] += 0.5  # the ranks' batches differ in distribution: their sums, and so their codebooks, differ
    # Small codes along latents, as record.py's EMA case: the zero-count update divides the initial codes by about
    # (1 - decay) n_k at the first step, so codes as long as the latents would be thrown far from every latent, and
    # U(-1/K, 1/K) codes (the original's) would leave every token on one or two codes.
    rows = latents[0].permute(0, 1, 3, 4, 2).reshape(-1, DIM)
    codes = rows[torch.randperm(rows.shape[0], generator=generator)[:CODEBOOK_SIZE]]
    codebook = CODE_SCALE * rows.norm(dim=1).mean() * nn.functional.normalize(codes, dim=1)
    return {
        "conv_weight": conv,
        "conv_bias": torch.zeros(DIM),
        "codebook": codebook,
        "latents": latents,
        "targets": torch.randn(STEPS, WORLD_SIZE, BATCH, DIM, SIDE, SIDE, generator=generator),
    }


def load_vq(checkout: Path):
    spec = importlib.util.spec_from_file_location("vector_quantize_vq", checkout / "quantizers" / "vq.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Net(nn.Module):
    def __init__(self, quantize: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(DIM, DIM, 1)
        self.quantize_t = quantize

    def forward(self, x):
        return self.quantize_t(self.conv(x))


def worker(rank: int, checkout: str, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        vq = load_vq(Path(checkout))
        data = inputs()
        quantize = vq.VectorQuantizeEMA(
            argparse.Namespace(quantizer="ema"), DIM, CODEBOOK_SIZE, commitment_cost=1, decay=DECAY, eps=EPS
        )
        net = Net(quantize)
        with torch.no_grad():
            net.conv.weight.copy_(data["conv_weight"])
            net.conv.bias.copy_(data["conv_bias"])
            quantize.embed.weight.copy_(data["codebook"])
            quantize.embed_avg.copy_(data["codebook"])  # the original's embed_avg starts as the codebook
        model = nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)  # train.py line 79
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)
        steps = []
        for step in range(STEPS):
            optimizer.zero_grad()
            z_q, diff, ids = model(data["latents"][step, rank])
            loss = diff + (z_q - data["targets"][step, rank]).pow(2).mean()
            loss.backward()
            optimizer.step()
            steps.append(
                {
                    "indices": ids.clone(),
                    "commitment": diff.detach().clone(),
                    "codebook": quantize.embed.weight.detach().clone(),
                    "counts": quantize.cluster_size.clone(),
                    "sums": quantize.embed_avg.clone(),
                    "conv_weight": net.conv.weight.detach().clone(),
                }
            )
        torch.save(
            {"steps": steps, "state": {k: v.clone() for k, v in model.state_dict().items()}},
            Path(out) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help=f"an export of Doraemonzzz/vector-quantize at {COMMIT}")
    parser.add_argument("--out", type=Path, default=HERE / "ema_ddp.pt")
    options = parser.parse_args()
    checkout = options.checkout.resolve()
    if git_blob_id(checkout / "quantizers" / "vq.py") != BLOBS["quantizers/vq.py"]:
        print(f"error: {checkout} is not an export of Doraemonzzz/vector-quantize at {COMMIT}", file=sys.stderr)
        raise SystemExit(2)
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(worker, args=(str(checkout), os.path.join(folder, "init"), folder), nprocs=WORLD_SIZE, join=True)
        ranks = [torch.load(Path(folder) / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    saving = [r for r in range(WORLD_SIZE) if (r == 0) == 0]  # train.py: `if ... is_main_process() == 0`
    torch.save(
        {
            "commit": COMMIT,
            "world_size": WORLD_SIZE,
            "settings": {"codebook_size": CODEBOOK_SIZE, "dim": DIM, "decay": DECAY, "eps": EPS, "lr": LR},
            "inputs": inputs(),
            "ranks": [rank["steps"] for rank in ranks],
            "saved_state": ranks[saving[0]]["state"],
            "saving_ranks": saving,
        },
        options.out,
    )
    print(f"recorded {options.out} (checkpoint written by ranks {saving})")


if __name__ == "__main__":
    main()

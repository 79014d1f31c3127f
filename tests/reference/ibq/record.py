"""Records what the two original IBQ quantizers compute on one random input, for ``tests/test_ibq.py``.

    git -C visual-tokenizer-pytorch archive 351d29d models/quantizer | tar -x -C /tmp/vt
    git -C SEED-Voken archive HEAD src/IBQ/modules/vqvae/quantize.py | tar -x -C /tmp/seed
    python tests/reference/ibq/record.py /tmp/vt /tmp/seed --commits 351d29d... b9a17ea...

It loads only the quantizer files (xyfJASON/visual-tokenizer-pytorch ``models/quantizer/
index_backpropagation_quantizer.py``, ``IndexBackpropagationQuantizer``; TencentARC/SEED-Voken
``src/IBQ/modules/vqvae/quantize.py``, ``IndexPropagationQuantize``; nothing is copied into vqbench), gives both the
same codebook and input z, and stores their outputs (codes, indices, each loss) and the gradients of each output
with respect to z and the codebook. The stored ``ibq.pt`` was recorded from visual-tokenizer-pytorch
351d29ddf8f41d8ac41224025023668ed4ad0de0 and SEED-Voken b9a17eac8e2c0779c12a5429b0bfd6c502788484 (stored under
``commits``).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch

OUT = Path(__file__).with_name("ibq.pt")
K, D, SHAPE = 64, 8, (2, 8, 4, 4)


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grads(output: torch.Tensor, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    """d output / d leaf for each leaf (zeros where the output does not depend on it)."""
    found = torch.autograd.grad(output, leaves, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g.detach().clone() for g, x in zip(found, leaves, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("visual_tokenizer", type=Path, help="an export of xyfJASON/visual-tokenizer-pytorch")
    parser.add_argument("seed_voken", type=Path, help="an export of TencentARC/SEED-Voken")
    parser.add_argument("--commits", nargs=2, required=True, help="the two exports' commits, recorded beside them")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    vt = load(args.visual_tokenizer / "models/quantizer/index_backpropagation_quantizer.py", "vt_ibq")
    seed = load(args.seed_voken / "src/IBQ/modules/vqvae/quantize.py", "seed_ibq")
    generator = torch.Generator().manual_seed(0)
    # codes of norm ~1.4 and z ~ N(0, 1): softmax over the dot products is neither one-hot nor uniform
    codebook = torch.randn(K, D, generator=generator) * 0.5
    z = torch.randn(*SHAPE, generator=generator)
    weights = torch.randn(*SHAPE, generator=generator)  # gradient probe for the codes: sum(codes * weights)
    record = {"commits": args.commits, "codebook": codebook, "z": z, "probe": weights}

    a = vt.IndexBackpropagationQuantizer(K, D, use_entropy_reg=True, entropy_reg_temp=0.01)
    a.codebook.weight.data.copy_(codebook)
    zl = z.clone().requires_grad_(True)
    out = a(zl)
    leaves = [zl, a.codebook.weight]
    terms = {
        "codes": (out["quantized_z"] * weights).sum(),
        "loss_vq": out["loss_vq"],
        "loss_commit": out["loss_commit"],
        "loss_entropy": out["loss_entropy"],
    }
    record["visual_tokenizer"] = {
        "codes": out["quantized_z"].detach(),
        "indices": out["indices"].reshape(SHAPE[0], SHAPE[2], SHAPE[3]),
        "values": {k: v.detach() for k, v in terms.items()},
        "grads": {k: grads(v, leaves) for k, v in terms.items()},
    }

    b = seed.IndexPropagationQuantize(K, D, beta=0.25, use_entropy_loss=True, entropy_temperature=0.01)
    b.embedding.weight.data.copy_(codebook)
    zl = z.clone().requires_grad_(True)
    z_q, (quant_loss, sample_entropy, avg_entropy, entropy_loss), (_, _, ind) = b(zl)
    leaves = [zl, b.embedding.weight]
    terms = {"codes": (z_q * weights).sum(), "quant_loss": quant_loss, "entropy_loss": entropy_loss}
    record["seed_voken"] = {
        "codes": z_q.detach(),
        "indices": ind.reshape(SHAPE[0], SHAPE[2], SHAPE[3]),
        "values": {k: v.detach() for k, v in terms.items()},
        "grads": {k: grads(v, leaves) for k, v in terms.items()},
    }
    torch.save(record, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

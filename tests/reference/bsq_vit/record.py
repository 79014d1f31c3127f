"""Records what bsq-vit's ``BinarySphericalQuantizer`` computes on random inputs, for ``tests/test_bsq.py``.

    git -C bsq-vit archive HEAD transcoder/models/quantizer/bsq.py | tar -x -C /tmp/bsq
    python tests/reference/bsq_vit/record.py /tmp/bsq --commit 37d212d2b43f1c715c49808dd246ec26f826740f

It loads only zhaoyue-zephyrus/bsq-vit ``transcoder/models/quantizer/bsq.py`` (nothing is copied into vqbench),
feeds it u = F.normalize(z) as ``VITBSQModel.encode`` does (``l2_norm=True``, ``post_q_l2_norm=True``: the
quantizer's ``l2_norm``), and stores, per setting (bits, group size, per-sample entropy form, inverse temperature),
the codes, indices and the gradients with respect to z of the codes (through a random probe), of the commitment loss
(beta = 1, gammas 0), of the per-sample entropy (gamma0 = 1) and of the codebook entropy (gamma = 1). The stored
``bsq.pt`` was recorded from commit 37d212d2b43f1c715c49808dd246ec26f826740f (under ``commit``).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

OUT = Path(__file__).with_name("bsq.pt")
#: (bits, group size, per-sample entropy form, inverse temperature)
SETTINGS = [
    (8, 1, "group", 1.0),
    (8, 4, "group", 1.0),
    (8, 4, "analytical", 1.0),
    (8, 8, "group", 2.0),
    (18, 9, "analytical", 1.0),
    (12, 6, "group", 1.0),
]
TOKENS = (2, 16)  # B x L tokens, the original's 'blc' layout


def load(checkout: Path):
    spec = importlib.util.spec_from_file_location("bsq_vit_bsq", checkout / "transcoder/models/quantizer/bsq.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="an export of zhaoyue-zephyrus/bsq-vit")
    parser.add_argument("--commit", required=True, help="the export's commit, recorded beside the outputs")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    bsq = load(args.checkout)
    generator = torch.Generator().manual_seed(0)
    record = {"commit": args.commit, "cases": []}
    for bits, group, persample, inv_t in SETTINGS:
        z = torch.randn(*TOKENS, bits, generator=generator)
        probe = torch.randn(*TOKENS, bits, generator=generator)
        case = {"bits": bits, "group_size": group, "persample": persample, "inv_temperature": inv_t, "z": z}
        case["probe"] = probe
        for name, (beta, gamma0, gamma) in {
            "commitment": (1, 0, 0),
            "per_sample": (0, 1, 0),
            "codebook": (0, 0, 1),
        }.items():
            q = bsq.BinarySphericalQuantizer(
                bits, beta, gamma0, gamma, 1.0, input_format="blc", group_size=group,
                persample_entropy_compute=persample, l2_norm=True, inv_temperature=inv_t,
            ).train()  # fmt: skip
            zl = z.clone().requires_grad_(True)
            zq, loss, info = q(F.normalize(zl, dim=-1))
            case[f"{name}_loss"] = loss.detach()
            case[f"{name}_grad"] = torch.autograd.grad(loss, zl, retain_graph=True)[0]
            if name == "commitment":
                case["codes"] = zq.detach()
                case["indices"] = info["indices"]
                case["codes_grad"] = torch.autograd.grad((zq * probe).sum(), zl)[0]
                case["H"] = info["H"].detach()
        record["cases"].append(case)
    torch.save(record, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

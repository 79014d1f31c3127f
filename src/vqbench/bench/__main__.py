"""python -m vqbench.bench quantizers|train|data|nonfinite [options]; see each module's docstring."""

from __future__ import annotations

import argparse
import json
import sys

from vqbench.bench import data, nonfinite, quantizers, train


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_case":  # one quantizer case, in its own process (see quantizers._run_in_subprocess)
        case = json.loads(argv[1])
        keys = ("impl", "K", "d", "N", "repeats", "memory_limit_gb", "device")
        print(json.dumps(quantizers.run_case(*(case[k] for k in keys))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m vqbench.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quantizers", help="our vq/ema/fsq/lfq vs vector-quantize-pytorch")
    q.add_argument("--repeats", type=int, default=3)
    q.add_argument("--memory-limit-gb", type=float, default=16.0)
    q.add_argument(
        "--case-timeout-s", type=float, default=600.0, help="a case still running after this is 'out of time'"
    )
    q.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    q.add_argument("--only", nargs="*", choices=[p[0] for p in quantizers.PAIRS], help="measure only these of ours")
    t = sub.add_parser("train", help="training throughput and MFU of every recipe, fp32 vs the speed options")
    train.add_arguments(t)
    d = sub.add_parser("data", help="images/s of the plain and the cached CelebA loaders")
    data.add_arguments(d)
    n = sub.add_parser("nonfinite", help="per-step cost of the non-finite check, vs the same step without it")
    nonfinite.add_arguments(n)
    args = parser.parse_args(argv)
    run = {
        "quantizers": quantizers.bench_quantizers,
        "train": train.bench_train,
        "data": data.bench_data,
        "nonfinite": nonfinite.bench_nonfinite,
    }
    return run[args.what](args)


if __name__ == "__main__":
    raise SystemExit(main())

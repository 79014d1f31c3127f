"""Benchmarks (not tests): ``python -m vqbench.bench quantizers|train|data``; each writes JSON under
docs/benchmarks/ and its table into docs/benchmarks.md. Ratios compare implementations measured in the same run."""

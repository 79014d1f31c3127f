"""What every benchmark shares: where results go, and how a table lands in docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def device_name(device: str) -> str:
    """The accelerator's name, or the CPU model and the threads torch uses."""
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def load_average() -> float:
    """The 1-minute load average: the machine may be shared, so every benchmark records it beside its timings."""
    return os.getloadavg()[0]


def write_section(name: str, body: str, command: str) -> None:
    """Replaces the section ``name`` of docs/benchmarks.md (between its markers), or appends it."""
    path = DOCS / "benchmarks.md"
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    text = (
        path.read_text() if path.exists() else "# Benchmarks\n\nEvery number here was produced by the command shown.\n"
    )
    section = f"{begin}\n`{command}`\n\n{body}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + f"\n\n## {name}\n\n{section}\n"
    path.write_text(text)

"""A clone of the repository explains itself: no file points to documents that live outside it."""

import re
import subprocess

from tests.conftest import ROOT

#: Folders and files a clone holds (build outputs, virtualenvs and run directories are not scanned).
SCANNED = ("README.md", "pyproject.toml", "run.py", "conf", "docs", "notebooks", "src", "sweeps", "tests")
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".toml", ".ipynb", ".txt", ".json", ".cfg"}
#: Pointers to the planning documents the project was specified from, which a user who clones it does not have
#: (each written in two pieces, so that this file does not match itself).
SEED = "se" + "ed"
OUTSIDE = re.compile(
    "|".join(
        [
            r"\bsha" + "red/",
            r"\bSP" + r"EC\b",
            r"\bDES" + r"IGN\b",
            rf"\b{SEED}s?/",
            rf"\b{SEED}s? \d{{3}}\b",
            rf"\b{SEED}(?:'s)? (?:table|file|document|project)s?\b",
            rf"\bthe {SEED}'s\b",
        ]
    )
)


def scanned_files():
    for entry in SCANNED:
        path = ROOT / entry
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for file in files:
            if file.suffix in TEXT_SUFFIXES and "__pycache__" not in file.parts:
                yield file


def test_no_file_points_outside_the_repository():
    hits = []
    for file in scanned_files():
        for number, line in enumerate(file.read_text(errors="replace").splitlines(), start=1):
            if OUTSIDE.search(line):
                hits.append(f"{file.relative_to(ROOT)}:{number}: {line.strip()}")
    assert hits == [], "\n".join(hits)


def test_the_scan_sees_a_pointer():
    assert OUTSIDE.search("see " + "sha" + "red/" + SEED + "s/000_x.txt") and OUTSIDE.search("(SP" + "EC §6)")
    assert OUTSIDE.search(f"the {SEED}'s table") and OUTSIDE.search(f"{SEED} 002's protocol")
    assert not OUTSIDE.search(f"{SEED}: 0") and not OUTSIDE.search(f"quantizer.l2_norm_mode={SEED}")
    assert any(f.name == "README.md" for f in scanned_files())


def test_no_symbolic_links_in_the_tree():
    """Zip downloads and Windows checkouts drop symlinks: the tree holds plain files only (git's own listing)."""
    listing = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    links = [line.split("\t", 1)[1] for line in listing.splitlines() if line.startswith("120000 ")]
    assert links == []


def test_the_sweep_group_is_the_sweeps_folder():
    """`+sweep=NAME` composes sweeps/NAME.yaml and `sweep/NAME_rows=ROW` the entry ROW of its `rows:`, without a
    conf/sweep link; a file that holds only a published table registers nothing."""
    import yaml

    from vqbench.sweep_configs import SWEEPS_DIR, register_sweeps

    names = register_sweeps()
    files = [yaml.safe_load(path.read_text()) for path in sorted(SWEEPS_DIR.rglob("*.yaml"))]
    expected = sum(len(f.get("rows") or {}) + bool(set(f) - {"published", "rows"}) for f in files)
    assert len(names) == expected and "sweep/celeba64_vq_dim" in names
    assert "sweep/imagenet128_fsq_rows/ema" in names and "sweep/imagenet256_pretrained" not in names
    assert not (ROOT / "conf" / "sweep").exists()

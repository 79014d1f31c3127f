"""Issue 20, item 7: every ``key=value`` override written in README.md and docs/*.md composes, so a documented key
cannot go stale (a renamed or moved key fails here, naming the file and line).

Overrides are taken from shell code blocks and inline code: the words after ``python run.py`` of a command (one
composition per command, each value of a ``-m`` sweep composed in turn), and every ``key=value`` word of inline code
elsewhere. An inline override that belongs to a config group option other than the default (``quantizer.levels``
needs ``quantizer=fsq``) must compose with some option of its group, or with some ``+experiment=``. Arguments of
``python -m vqbench.tokenize`` are its own options (``vqbench.tokenize.OPTIONS``) or data overrides; the other
``python -m vqbench.*`` tools take argparse flags, not overrides, and are not read.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tests.conftest import ROOT
from vqbench.tokenize import OPTIONS as TOKENIZE_OPTIONS

CONF = ROOT / "conf"
SWEEPS = ROOT / "sweeps"
#: A Hydra override word: optional +/~/++, a dotted (or group/path) key, =, a value without parentheses.
OVERRIDE = re.compile(r"^(\+\+|\+|~)?[A-Za-z_][\w-]*(?:[./][A-Za-z_][\w-]*)*(?:@[\w.]+)?=[^()]*$")
#: Fenced code blocks read as commands (python, yaml, ... blocks are not command lines).
SHELL_LANGUAGES = ("", "bash", "sh", "shell", "console")
#: Inline code that names a config key alone: a dotted key under one of the config's top-level nodes.
CONFIG_KEY = re.compile(
    r"^(data|model|quantizer|loss|trainer|logger|codebook|optimizer|performance|metrics|checkpoint)(\.[A-Za-z_]\w*)+$"
)
#: ... unless it is a file name (`metrics.json`, `model.py`).
FILE_EXTENSIONS = (
    "safetensors",
    "json",
    "jsonl",
    "py",
    "yaml",
    "md",
    "ckpt",
    "pt",
    "pth",
    "png",
    "txt",
    "npy",
    "tsv",
    "csv",
)
#: Inline code that is Python, not a command line: a call, an argument list, a Python constant as a value.
PYTHON_CODE = re.compile(r"[()]|, |=(True|False|None)\b")
#: Documented words that are not overrides of run.py and cannot be composed, each with the reason. Keep it small.
NOT_OVERRIDES: dict[str, str] = {
    "quantizer=nope": "README's example of an unknown option, which Hydra itself refuses",
    "decay=0.99": "an argument of vector-quantize-pytorch's VectorQuantize (docs/benchmarks.md)",
    "data_range=2.0": "an argument of scikit-image's structural_similarity (docs/protocol.md)",
    "trainer.gradient_clip_val=...": "the README names it as the key not to use (optimizer.grad_clip clips)",
    "quantizer=toy": "docs/extending.md's example: it exists once its files are written (tests/test_extending.py)",
    "quantizer=vq,toy": "docs/extending.md's example sweep, with its toy quantizer (see quantizer=toy)",
    "data=toy": "docs/extending.md's example: it exists once its files are written (tests/test_extending.py)",
    "PreemptMode=REQUEUE": "a SLURM cluster setting of slurm.conf (docs/resuming-and-failures.md)",
    "quantizer=vq,codebook.dim=4": "a TensorBoard run name, made of a sweep job's overrides (docs/results.md)",
}


@dataclass(frozen=True)
class Documented:
    """Overrides written together (one command, or one inline code span), and where."""

    where: str
    overrides: tuple[str, ...]
    command: bool  # a whole `python run.py ...` command: composed exactly as written


def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/ (listed, so that new docs are read too)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote in prose: plain split
        return text.split()


#: ``ATEN_CPU_CAPABILITY=default``, ``HF_HUB_OFFLINE=1``: environment variables set before a command, not overrides.
ENVIRONMENT_VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]*=")


def _overrides(words: list[str]) -> list[str]:
    return [w for w in words if OVERRIDE.match(w) and not ENVIRONMENT_VARIABLE.match(w) and w not in NOT_OVERRIDES]


def _commands(text: str) -> list[list[str]]:
    """The words of each shell command in ``text`` (line continuations joined; ``&&``, ``;`` and ``|`` split)."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        for part in re.split(r"&&|;|\|", line):
            words = _words(part)
            if words:
                commands.append(words)
    return commands


def _from_command(words: list[str], where: str) -> list[Documented]:
    if "run.py" in words:
        return [Documented(where, tuple(_overrides(words[words.index("run.py") + 1 :])), True)]
    if "vqbench.tokenize" in words:
        arguments = words[words.index("vqbench.tokenize") + 1 :]
        data = [w for w in _overrides(arguments) if w.lstrip("+~").split("=")[0].split(".")[0] == "data"]
        return [Documented(where, tuple(data), True)]
    if any(w.startswith("vqbench.") or w in ("python", "python3") for w in words):
        return []  # argparse tools (report, bench, convert), other Python commands
    # inline code: the tokenize options written on their own (`split=train`, `shards=N shard=I`) are not run.py's
    tokenize_only = TOKENIZE_OPTIONS - {"ckpt"}
    return [Documented(where, tuple(w for w in _overrides(words) if w.split("=")[0] not in tokenize_only), False)]


def documented_overrides() -> list[Documented]:
    found = []
    for path in doc_files():
        text = path.read_text()
        name = path.relative_to(ROOT)
        fenced = re.compile(r"^```([\w-]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
        for block in fenced.finditer(text):
            if block.group(1) not in SHELL_LANGUAGES:
                continue
            first_line = text.count("\n", 0, block.start()) + 2
            for words in _commands(block.group(2)):
                found += _from_command(words, f"{name}:{first_line}")
        prose = fenced.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        for span in re.finditer(r"``?([^`\n]+?)``?", prose):
            if PYTHON_CODE.search(span.group(1)):
                continue
            line = prose.count("\n", 0, span.start()) + 1
            if CONFIG_KEY.match(span.group(1)):  # a key named without a value: `data.make_dataset.holdout_fraction`
                if (
                    span.group(1).rsplit(".", 1)[1] not in FILE_EXTENSIONS
                    and f"{span.group(1)}=..." not in NOT_OVERRIDES
                ):
                    found.append(Documented(f"{name}:{line}", (f"{span.group(1)}=...",), False))
                continue
            for words in _commands(span.group(1)):
                found += _from_command(words, f"{name}:{line}")
    return [d for d in found if d.overrides]


def _group_folder(key: str) -> Path:
    """The folder of a config group under conf/."""
    return CONF.joinpath(*key.replace(".", "/").split("/"))


def _stored_options(key: str) -> set[str] | None:
    """The options of a group in Hydra's ConfigStore, or None if it holds no such group: the sweep group and its
    row groups (registered from sweeps/ by vqbench/sweep_configs.py), Hydra's plugins (``hydra/launcher``)."""
    from hydra.core.config_store import ConfigStore

    try:
        entries = ConfigStore.instance().list(key.replace(".", "/"))
    except OSError:  # Hydra has no such group
        return None
    return {name.removesuffix(".yaml") for name in entries if name.endswith(".yaml")}


def _is_group(key: str) -> bool:
    return _group_folder(key).is_dir() or (key.startswith("sweep") and _stored_options(key) is not None)


def _group_options(key: str) -> list[str]:
    """A group's options: its files, and for the sweep group and Hydra's groups the ConfigStore's."""
    options = {p.stem for p in _group_folder(key).glob("*.yaml")}
    if key.startswith(("hydra/", "sweep")):
        options |= _stored_options(key) or set()
    return sorted(options)


def _placeholder(value: str) -> bool:
    """``PATH``, ``NAME``, ``N``, ``...`` or nothing (``data=``): the docs name the key, the reader gives the value."""
    return value in ("", "...") or re.fullmatch(r"[A-Z][A-Z_]*", value) is not None


def _choices(overrides: tuple[str, ...]) -> list[list[str]]:
    """The override lists of a command: as written (first value of each sweep), then each further option of a group
    sweep (``quantizer=vq,ema,fsq``) in turn; a value sweep (``codebook.dim=4,16,64``) cannot change the keys."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    first = []
    for override in parsed:
        if override.is_sweep_override():
            values = [f"{override.get_key_element()}={v}" for v in override.sweep_string_iterator()]
            first.append(values if _is_group(override.key_or_group) else values[:1])
        elif _is_group(override.key_or_group) and _placeholder(str(override.value())):
            # `+experiment=NAME`: the command must compose with every option the reader may give
            prefix = override.input_line.split("=", 1)[0]
            first.append([f"{prefix}={option}" for option in _group_options(override.key_or_group)])
        else:
            first.append([override.input_line])
    lists = [[choices[0] for choices in first]]
    for i, choices in enumerate(first):
        lists += [[*(c[0] for c in first[:i]), value, *(c[0] for c in first[i + 1 :])] for value in choices[1:]]
    return lists


def _composes(overrides: list[str]) -> str | None:
    """None if the overrides compose (with Hydra's own config, so hydra.* keys count), else the error."""
    try:
        compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def _option_sets(key: str) -> list[tuple[str, ...]]:
    """The configs that may hold ``key``: the default, each option of the group its first part names (an option's
    keys live under its group, e.g. ``quantizer.levels`` in conf/quantizer/fsq.yaml), each experiment and sweep (they
    set keys anywhere), and for ``hydra.launcher.*`` each launcher."""
    top = key.split(".")[0]
    sets = [()]
    if top in ("hydra",):
        sets += [(f"hydra/launcher={o.stem}",) for o in sorted((CONF / "hydra" / "launcher").glob("*.yaml"))]
    elif (CONF / top).is_dir():
        sets += [(f"{top}={o.stem}",) for o in sorted((CONF / top).glob("*.yaml"))]
    anywhere = [(f"+experiment={o}", CONF / "experiment" / f"{o}.yaml") for o in _group_options("experiment")]
    anywhere += [(f"+sweep={o}", SWEEPS / f"{o}.yaml") for o in _group_options("sweep")]
    # those whose file names the key first (the order only saves time: every one is tried before giving up)
    anywhere.sort(key=lambda item: top not in item[1].read_text())
    return sets + [(override,) for override, _ in anywhere]


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


class KnownConfigs:
    """Composed configs, each composed once, when first needed."""

    def __init__(self):
        self.composed: dict[tuple[str, ...], object] = {}

    def holding(self, key: str):
        """The configs that may hold ``key`` (``_option_sets``), composed one by one."""
        for overrides in _option_sets(key):
            if overrides not in self.composed:
                self.composed[overrides] = compose(
                    config_name="config", overrides=list(overrides), return_hydra_config=True
                )
            yield self.composed[overrides]


@pytest.fixture(scope="module")
def known_configs(hydra_conf) -> KnownConfigs:
    return KnownConfigs()


def _inline_problem(override: str, configs: KnownConfigs) -> str | None:
    """Why the inline override cannot be given to run.py, or None: a group option must exist, a key must exist in
    the default config or under some group option, experiment or launcher."""
    parsed = OverridesParser.create().parse_overrides([override])[0]
    key, value = parsed.key_or_group, override.split("=", 1)[1]
    if _is_group(key):
        options = _group_options(key)
        values = (
            []
            if _placeholder(value)
            else [str(v) for v in parsed.sweep_string_iterator()]
            if parsed.is_sweep_override()
            else [value]
        )
        missing = [v for v in values if v not in options]
        return f"no option {missing} in the group {key} (options: {', '.join(options)})" if missing else None
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    for cfg in configs.holding(key):
        if OmegaConf.select(cfg, key, default=_MISSING) is not _MISSING:
            return None
        if override.startswith("+") and (not parent or OmegaConf.select(cfg, parent, default=_MISSING) is not _MISSING):
            return None  # adds a key: its parent node must exist
    return "no config (default, any group option, experiment, sweep or launcher) has this key"


_MISSING = object()
CASES = documented_overrides()
COMMANDS = sorted({d.overrides: d for d in CASES if d.command}.values(), key=lambda d: d.where)


def test_the_docs_hold_overrides_to_check():
    """The extraction finds the commands of the README's quick start (a broken extractor would pass vacuously)."""
    commands = {d.overrides for d in COMMANDS}
    assert ("quantizer=vq,ema,fsq", "codebook.dim=4,16,64") in commands  # -m is a flag, not an override
    assert ("+eval=true", "ckpt=outputs/DATE/TIME/checkpoints/last.ckpt") in commands
    assert len(COMMANDS) >= 10 and {d.where.split(":")[0] for d in CASES} >= {"README.md", "docs/recipes.md"}


@pytest.mark.parametrize("documented", COMMANDS, ids=[f"{d.where} {' '.join(d.overrides)}"[:100] for d in COMMANDS])
def test_every_documented_command_composes(documented, hydra_conf):
    for overrides in _choices(documented.overrides):
        error = _composes(overrides)
        assert error is None, f"{documented.where}: python run.py {' '.join(overrides)}: {error}"


def test_every_inline_override_names_an_existing_key(known_configs):
    problems = [
        f"{d.where}: `{override}`: {problem}"
        for d in CASES
        if not d.command
        for override in d.overrides
        if (problem := _inline_problem(override, known_configs)) is not None
    ]
    assert not problems, "\n".join(problems)

"""The ``sweep`` config group: every YAML file under the repository's ``sweeps/`` folder.

``python run.py -m +sweep=NAME`` composes ``sweeps/NAME.yaml``; a subfolder is a nested group
(``sweeps/SUB/NAME.yaml`` is ``sweep/SUB=NAME``). Two top-level keys of a sweep file are not config:

- ``published:``, the table the sweep reproduces (read by ``vqbench.published``), is left out of the registered
  config, so no run's config, checkpoint or hyperparameters hold it. A file with nothing else registers no sweep.
- ``rows:`` (``ROW: SETTINGS``, for a table whose rows differ in several keys) becomes the group
  ``sweep/NAME_rows``, one option per row, ``# @package _global_``: the sweep lists ``/sweep/NAME_rows: ROW`` in its
  defaults (after the experiment, so the row wins whatever the order of a job's overrides) and sweeps
  ``sweep/NAME_rows: ROW1,ROW2,...``. A job composes exactly as it did from one file per row.

The files stay in the top-level ``sweeps/`` folder, where a reader looks for the tables, and are registered in Hydra's
ConfigStore when this module is imported: ``run.py``, ``vqbench.compose`` and the tests import it before composing,
so each sees the same group (Hydra's multirun launchers hand the ConfigStore to their workers). This replaces a
``conf/sweep`` symlink, which zip downloads and Windows checkouts do not keep.
"""

from __future__ import annotations

import re
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from vqbench.published import SWEEPS_DIR, TABLE_KEY

#: The top-level key of a sweep file whose entries are the options of the group ``sweep/NAME_rows``.
ROWS_KEY = "rows"
_PACKAGE_HEADER = re.compile(r"^#\s*@package\s+(\S+)\s*$")


def _package(text: str) -> str | None:
    """The ``# @package`` directive of a config file's header (Hydra reads it from the comment lines on top)."""
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        match = _PACKAGE_HEADER.match(line)
        if match:
            return match.group(1)
    return None


def register_sweeps(folder: Path = SWEEPS_DIR) -> list[str]:
    """Stores each ``folder/**/NAME.yaml`` as ``sweep[/SUBFOLDER]/NAME`` (without its ``published:`` block) and each
    entry ROW of its ``rows:`` as ``sweep[/SUBFOLDER]/NAME_rows/ROW``; returns the registered names."""
    store = ConfigStore.instance()
    names = []
    for path in sorted(folder.rglob("*.yaml")):
        relative = path.relative_to(folder)
        group = "/".join(("sweep", *relative.parent.parts))
        text = path.read_text(encoding="utf-8")
        node = OmegaConf.create(text)
        node.pop(TABLE_KEY, None)
        rows = node.pop(ROWS_KEY, None)
        if rows is not None and not (OmegaConf.is_dict(rows) and all(OmegaConf.is_dict(v) for v in rows.values())):
            raise ValueError(f"{path}: {ROWS_KEY}: must map each row's name to its settings (ROW: {{KEY: VALUE}})")
        for row, settings in (rows or {}).items():
            row_group = f"{group}/{relative.stem}_rows"
            store.store(name=str(row), node=settings, group=row_group, package="_global_")
            names.append(f"{row_group}/{row}")
        if len(node) == 0:  # a published table without a sweep
            continue
        store.store(name=relative.stem, node=node, group=group, package=_package(text))
        names.append(f"{group}/{relative.stem}")
    return names


register_sweeps()

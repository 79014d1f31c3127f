"""Hydra callbacks of a run or a sweep as a whole (``hydra.callbacks`` in conf/config.yaml): the output folder must
take files before Hydra creates it, and a multirun ends by listing the jobs that failed and exiting non-zero. (The
folder's one-writer lock is vqbench.folder_lock.OneWriterPerFolder.)"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vqbench.errors import OutputError
from vqbench.job_status import FAILURE_STATUS, USER_ERROR_STATUS, check_writable
from vqbench.results import new_failures, snapshot_failures


class FailedJobsSummary(Callback):
    """Hydra callback (``hydra.callbacks`` in conf/config.yaml): after a multirun, lists the jobs that failed in it
    (the ``failed.json`` files it wrote) and exits non-zero: 2 if every failure was a user error, else 1."""

    def __init__(self) -> None:
        self.before: dict[Path, tuple[int, int]] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.before = snapshot_failures(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        failures = new_failures(sweep, self.before)
        if not failures:
            return
        lines = [f"error: {len(failures)} job(s) of the sweep in {sweep} failed; the others ran:"]
        for directory, record in failures:
            overrides = " ".join(record.get("overrides", []))
            step = "" if record.get("step") is None else f" at step {record['step']}"
            lines.append(f"  {directory} ({overrides}){step}: {record.get('error')}")
        lines.append("Fix the cause and re-run the same command: it retries only the failed and unfinished jobs.")
        print("\n".join(lines), file=sys.stderr)
        statuses = {record.get("exit_status", FAILURE_STATUS) for _, record in failures}
        raise SystemExit(USER_ERROR_STATUS if statuses == {USER_ERROR_STATUS} else FAILURE_STATUS)


class WritableOutput(Callback):
    """Hydra callback (``hydra.callbacks``): the run's (or the sweep's) output folder must take files. Checked before
    Hydra creates it, so that an unwritable ``hydra.run.dir`` / ``hydra.sweep.dir`` is one line, not a traceback."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._require(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._require(Path(config.hydra.sweep.dir), "hydra.sweep.dir")

    @staticmethod
    def _require(folder: Path, key: str) -> None:
        try:
            check_writable(folder, key)
        except OutputError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(USER_ERROR_STATUS) from None

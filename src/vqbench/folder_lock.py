"""One writer per run folder, and evaluations kept out of trainings' folders.

A training or evaluation holds an exclusive ``fcntl.flock`` on ``RUN_FOLDER/.vqbench.lock`` for as long as it runs.
The kernel releases the lock when the process ends, however it ends (SIGKILL, a lost node), so there is no stale
lock to clean up. A second run into a held folder (the identical command started again, or two runs started in the
same second of a default ``hydra.run.dir``) exits with status 2 and one line naming the folder and the holder (pid,
host, start time), and writes nothing there. The lock file holds the holder's record as JSON; it stays after the
run (it then names the last holder, and its ``kind`` says whether a training used the folder).

``fcntl.flock`` directly rather than the ``filelock`` package: filelock truncates the lock file when it opens it,
which would erase the holder's record before a second run could read it. (flock works on local file systems and on
NFS v4 / Lustre mounted with ``flock``; it is not available on Windows, where vqbench does not run trainings.)

The lock is taken by a Hydra callback (``OneWriterPerFolder``, before Hydra writes ``.hydra/`` and the log into the
folder) and again by ``run`` for each job (a multirun's jobs, or a job started in-process); within one process a
folder it already holds is not locked again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vqbench.errors import OutputError

LOCK_FILE = ".vqbench.lock"
#: Folders this process holds, with the open descriptor that holds each lock.
_held: dict[Path, int] = {}


class FolderRefusedError(OutputError):
    """The run folder is another run's (held by a running process, or a training's folder for an evaluation): the
    run writes nothing there, not even failed.json."""


def _key(folder: Path) -> Path:
    return Path(os.path.abspath(folder))


def _holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        record = {}
    if not record:
        return "a process that is starting"
    kind, pid, host, started = (record.get(k) for k in ("kind", "pid", "host", "started"))
    return f"{kind or 'a run'} pid {pid} on {host}, started {started}"


#: Environment variables in which launchers (Lightning's DDP launcher, torchrun, SLURM) give a process its rank.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def secondary_rank() -> bool:
    """Whether this process is one of a multi-process job's other ranks: the job's rank-0 process holds the folder for
    all of them (Lightning's DDP launcher starts ranks 1.. as copies of the command, into the same folder)."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "0")
        if value.isdigit() and int(value) > 0:
            return True
    return False


def acquire(folder: Path, kind: str) -> bool:
    """Locks ``folder`` for this process (``kind``: train or eval). Returns False if this process held it already,
    or if it is a secondary rank of a multi-process job (rank 0 holds the folder). Raises FolderRefusedError naming
    the holder if another process holds it."""
    key = _key(folder)
    if key in _held or secondary_rank():
        return False
    path = key / LOCK_FILE
    try:
        if not path.exists():
            key.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # no O_TRUNC: the holder's record must stay readable
    except OSError as error:
        raise OutputError(
            f"cannot write into the output folder {key} ({error.strerror or error}); choose a writable one with "
            "hydra.run.dir=..."
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise FolderRefusedError(
            f"{key} is in use by another run ({holder}); nothing was written there. Wait for it to end, or give "
            "this run its own folder with hydra.run.dir=..."
        ) from None
    record = {
        "kind": kind,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    _held[key] = fd
    return True


def release(folder: Path) -> None:
    fd = _held.pop(_key(folder), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


@contextlib.contextmanager
def holding(folder: Path, kind: str) -> Iterator[None]:
    """Holds the folder's lock inside the block (kept if this process held it before)."""
    acquired = acquire(folder, kind)
    try:
        yield
    finally:
        if acquired:
            release(folder)


def training_folder(folder: Path) -> Path | None:
    """The training folder ``folder`` is, or lies in: a Hydra run folder (``.hydra/``) with a ``checkpoints/``
    folder (also one written before lock files existed), or one whose lock file says a training used it (also one
    that failed or was interrupted before its first checkpoint). None if neither. (A ``checkpoints/`` folder alone,
    e.g. in a project's root, does not make a training folder.)"""
    for candidate in [_key(folder), *_key(folder).parents]:
        trained = (candidate / "checkpoints").is_dir() and (candidate / ".hydra").is_dir()
        if trained or _lock_kind(candidate) == "train":
            return candidate
    return None


def _lock_kind(folder: Path) -> str | None:
    try:
        return json.loads((folder / LOCK_FILE).read_text() or "{}").get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def refuse_training_folder(out: Path, key: str = "hydra.run.dir") -> None:
    """An evaluation writes into its own folder, never into a training's (running or not): its metrics.json would
    make an unfinished training look finished, and a finished training's results would be mixed with it."""
    training = training_folder(out)
    if training is not None:
        raise FolderRefusedError(
            f"{key}={out} is inside the training folder {training}; an evaluation never writes there (its "
            f"metrics.json would make that training look finished). Give the evaluation its own folder with "
            f"{key}=..., or leave {key} at its default"
        )


class OneWriterPerFolder(Callback):
    """Hydra callback (``hydra.callbacks`` in conf/config.yaml): locks ``hydra.run.dir`` (a single run) or
    ``hydra.sweep.dir`` (a multirun) before Hydra writes into it; an evaluation's folder must not be a training's.
    The lock is held until the process ends."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        evaluation = bool(config.get("eval", False))
        self._hold(Path(config.hydra.run.dir), "eval" if evaluation else "train", evaluation, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._hold(Path(config.hydra.sweep.dir), "sweep", False, "hydra.sweep.dir")

    @staticmethod
    def _hold(folder: Path, kind: str, evaluation: bool, key: str) -> None:
        try:
            if evaluation:
                refuse_training_folder(folder, key)
            acquire(folder, kind)
        except FolderRefusedError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        except OutputError:  # an unwritable folder: WritableOutput (the next callback) names it with its key
            pass

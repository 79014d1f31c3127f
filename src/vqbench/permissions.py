"""The permissions of the files vqbench writes: those of any file a program creates, 0o666 minus the umask.

``tempfile.mkstemp`` (the atomic writers' temporary file, renamed or linked into place) creates its file 0o600
whatever the umask, which would leave results, exports and converted checkpoints unreadable by the rest of a group
that shares a folder on purpose (umask 0o002 / 0o022).
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def current_umask() -> int:
    """The process's umask; read from /proc where there is one (os.umask can only read it by setting it, which races
    with other threads creating files)."""
    try:
        match = re.search(r"^Umask:\s*([0-7]+)$", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        match = None
    if match:
        return int(match.group(1), 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_created(fd: int) -> None:
    """Gives the open file ``fd`` the mode a plain ``open(path, "w")`` would have: 0o666 & ~umask."""
    os.fchmod(fd, 0o666 & ~current_umask())

"""Durable, atomic replacement of small private files.

The new content goes to a temporary file in the same directory, created with
O_EXCL at mode 0600, is fsync-ed, renamed over the target, and the directory
is fsync-ed so the rename itself survives a power loss. A crash at any point
leaves either the old file or the new one; the only debris is a temporary
file, which `remove_temporaries` clears at start-up. New files are linked
into place rather than renamed, so creation is exclusive as well.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TEMP_MARKER = ".tmp-"


def fsync_dir(directory: Path) -> None:
    """Make a rename or removal in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes, mode: int = 0o600, durable: bool = True) -> Path:
    temp = path.with_name(f".{path.name}{TEMP_MARKER}{secrets.token_hex(8)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if mode != 0o600:  # a file that is not ours keeps its own mode (an editor's)
            os.fchmod(fd, mode)
        if durable:
            os.fsync(fd)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return temp


def write_private(path: Path, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace `path` with `data` atomically and (unless not `durable`: a cache,
    say) durably; private, unless `mode` says otherwise: the mode of someone
    else's file being replaced."""
    temp = _write_temp(path, data, mode, durable)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def create_private(path: Path, data: bytes) -> None:
    """Create `path` with `data`, complete or not at all; FileExistsError if it exists."""
    temp = _write_temp(path, data)
    try:
        os.link(temp, path)
    finally:
        temp.unlink()
    fsync_dir(path.parent)


def remove_temporaries(directory: Path, name_pattern: str) -> list[Path]:
    """Delete the temporaries of files matching `name_pattern` that a crash left behind.

    They never hold a committed write.
    """
    removed = []
    for entry in directory.glob(f".{name_pattern}{TEMP_MARKER}*"):
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed

"""Files and folders written whole or not at all: a temporary sibling, renamed over.

A reader (or a run resumed after a crash) sees the old file or folder or the new one,
never half of one. Small files: :func:`write_text_atomic`, :func:`write_json_atomic`
(fsynced). Folders (run phases, reports, children): :func:`atomic_folder`, a context
manager that hands out a temporary sibling folder and renames it into place at the end.

This module is the only place that renames files or folders over others (a test scans
``src`` for it): writers with their own temporary folder (the streaming checkpoint
writer) finish with :func:`move_into_place`; a file written whole by another program
(a shard, a screenshot) goes over its destination with :func:`replace_file`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from darwinmerge.errors import OutputExistsError

__all__ = [
    "atomic_folder",
    "move_into_place",
    "replace_file",
    "write_json_atomic",
    "write_text_atomic",
]


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically; the temporary file never stays."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_file(src: str | Path, dst: str | Path) -> None:
    """Rename the finished file ``src`` over ``dst`` (one atomic rename, same filesystem)."""
    os.replace(src, dst)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """:func:`write_text_atomic` of ``data`` as indented JSON (NaN refused)."""
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _sync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def move_into_place(tmp: str | Path, path: str | Path) -> None:
    """Rename the finished folder ``tmp`` to ``path``. An existing ``path`` is moved aside
    first (``.NAME.old-PID``) and removed only once ``tmp`` is in place, so ``path`` is
    never missing for longer than two renames; if the second rename fails the old one is
    put back. The caller decides whether replacing ``path`` is allowed."""
    tmp, path = Path(tmp), Path(path)
    if path.exists() or path.is_symlink():
        aside = path.with_name(f".{path.name}.old-{os.getpid()}")
        if aside.exists():
            _remove(aside)
        os.replace(path, aside)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(aside, path)  # the old folder back in place
            raise
        _remove(aside)
    else:
        os.replace(tmp, path)
    _sync_dir(path.parent)


@contextmanager
def atomic_folder(path: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Write a folder whole: yields an empty temporary sibling of ``path``
    (``.NAME.tmp-PID``) to write into; on a clean exit it is renamed to ``path``, on an
    error (or Ctrl-C) it is removed and ``path`` is left as it was.

    An existing ``path`` (folder or file) is refused before any work unless ``force``;
    with ``force`` it is replaced only at the end, moved aside first so that ``path``
    is never missing for longer than two renames. Temporaries (and set-aside folders)
    left by killed processes (dead PIDs) are removed; a live writer's are left alone."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not force:
        raise OutputExistsError(f"{path}: already exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("tmp", "old"):
        for left in path.parent.glob(f".{path.name}.{kind}-*"):
            pid = left.name.rsplit("-", 1)[1]
            if pid.isdigit() and not _alive(int(pid)):
                _remove(left)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():  # this process's own, from an earlier failed attempt
        _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        move_into_place(tmp, path)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        raise

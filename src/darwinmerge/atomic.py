"""Small files written whole or not at all: a temporary sibling, fsynced, renamed over.

A reader (or a run resumed after a crash) sees the old file or the new one, never half of
one. Folders (children, run phases) are published by their own writers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["write_json_atomic", "write_text_atomic"]


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


def write_json_atomic(path: str | Path, data: Any) -> None:
    """:func:`write_text_atomic` of ``data`` as indented JSON (NaN refused)."""
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")

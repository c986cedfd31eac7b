"""Save / load of MRI result dataclasses as ``<name>.json`` (metadata) + ``<name>.npz``
(every NumPy field), and equality that compares arrays element-wise."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from darwinmerge.errors import CheckpointError

__all__ = ["ArrayRecord"]

R = TypeVar("R", bound="ArrayRecord")


class ArrayRecord:
    """Mixin for dataclasses whose fields are JSON values or ``np.ndarray``."""

    KIND = "record"
    #: Bumped when fields change; a file of another format is refused on load.
    FORMAT = 1

    def _split(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                arrays[f.name] = value
            else:
                meta[f.name] = value
        return meta, arrays

    def save(self, out_dir: str | Path, name: str | None = None) -> Path:
        """Write ``<name>.json`` and ``<name>.npz`` into ``out_dir``; returns the JSON path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = name or self.KIND
        meta, arrays = self._split()
        doc = {"kind": self.KIND, "format": self.FORMAT, "arrays": sorted(arrays), **meta}
        np.savez_compressed(out / f"{stem}.npz", **arrays)  # type: ignore[arg-type]
        path = out / f"{stem}.json"
        path.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
        return path

    @classmethod
    def load(cls: type[R], path: str | Path, name: str | None = None) -> R:
        """Load from a folder (with ``name``, default the kind) or from the JSON path."""
        p = Path(path)
        if p.is_dir():
            p = p / f"{name or cls.KIND}.json"
        if not p.is_file():
            raise CheckpointError(f"{cls.KIND} file {p} not found; run `darwin mri` first")
        doc = json.loads(p.read_text(encoding="utf-8"))
        if doc.get("kind") != cls.KIND:
            raise CheckpointError(f"{p} holds a {doc.get('kind')!r}, not a {cls.KIND!r}")
        if doc.get("format") != cls.FORMAT:
            raise CheckpointError(
                f"{p}: {cls.KIND} format {doc.get('format')!r}, this version reads format "
                f"{cls.FORMAT}; run `darwin mri` again"
            )
        npz = p.with_suffix(".npz")
        if not npz.is_file():
            raise CheckpointError(f"{p}: array file {npz.name} is missing next to it")
        with np.load(npz) as data:
            arrays = {k: data[k] for k in data.files}
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        names = {f.name for f in fields}
        kwargs = {k: v for k, v in doc.items() if k in names}
        kwargs.update(arrays)
        optional = {f.name for f in fields if f.default is not dataclasses.MISSING}
        missing = names - set(kwargs) - optional  # a field added later with a default
        if missing:
            raise CheckpointError(f"{p}: missing fields {sorted(missing)}")
        return cls(**kwargs)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if not (
                    isinstance(a, np.ndarray)
                    and isinstance(b, np.ndarray)
                    and a.shape == b.shape
                    and a.dtype == b.dtype
                    and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
                ):
                    return False
            elif json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):  # NaN-safe
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

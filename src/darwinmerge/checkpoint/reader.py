"""Lazy, tensor-by-tensor reader of a Hugging Face checkpoint (safetensors, opt-in pickle).

Opening reads only headers (and the index); every problem that can be seen there is
reported as a :class:`CheckpointError` naming the file. Tensor data is read on ``get`` /
``get_slice`` with positional reads (``os.preadv``, thread-safe) straight into a fresh
tensor, so the caller owns every result and resident memory holds only the tensors
alive, never a growing file mapping: a streamed merge of a model larger than RAM stays
bounded. A slice that is not one contiguous byte range (a step, or slicing a trailing
dim after a leading slice) goes through a ``safe_open`` handle instead and is copied.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from safetensors import safe_open

from darwinmerge.checkpoint.header import TensorInfo, read_safetensors_header
from darwinmerge.checkpoint.layout import Layout, find_layout
from darwinmerge.checkpoint.pickle_files import load_pickle_state_dict, pickle_refusal
from darwinmerge.errors import CheckpointError

__all__ = ["CheckpointReader"]

Index = tuple[int | slice, ...]


class CheckpointReader:
    """Read the tensors of one checkpoint lazily; see the module docstring."""

    def __init__(self, path: str | Path, *, allow_pickle: bool = False) -> None:
        layout = find_layout(Path(path))
        if layout.kind == "pickle" and not allow_pickle:
            raise pickle_refusal(layout.index_path or layout.files[0])
        self.path: Path = layout.model_dir
        self.config: dict[str, Any] = _read_config(self.path / "config.json")
        self.kind = layout.kind
        self._lock = threading.Lock()
        self._handles: dict[Path, Any] = {}
        self._fds: dict[Path, int] = {}
        self._pickles: dict[Path, dict[str, torch.Tensor]] = {}
        self._closed = False
        per_file: dict[Path, dict[str, TensorInfo]] = {}
        for file in layout.files:
            if layout.kind == "safetensors":
                per_file[file], _ = read_safetensors_header(file)
            else:
                state = load_pickle_state_dict(file)
                self._pickles[file] = state
                per_file[file] = {
                    name: TensorInfo(file, t.dtype, tuple(t.shape), t.numel() * t.element_size())
                    for name, t in state.items()
                }
        self._infos = _merge_files(per_file, layout)
        self._keys = list(self._infos)

    # ----------------------------------------------------------------- metadata
    def keys(self) -> list[str]:
        """All tensor names: index order when there is an index, else file then offset order."""
        return list(self._keys)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    @property
    def files(self) -> list[Path]:
        """The weight files, in the order they are first used by ``keys()``."""
        return list(dict.fromkeys(info.file for info in self._infos.values()))

    def file_of(self, name: str) -> Path:
        return self._info(name).file

    def shape(self, name: str) -> tuple[int, ...]:
        return self._info(name).shape

    def dtype(self, name: str) -> torch.dtype:
        return self._info(name).dtype

    def nbytes(self, name: str) -> int:
        return self._info(name).nbytes

    def total_bytes(self) -> int:
        return sum(info.nbytes for info in self._infos.values())

    # --------------------------------------------------------------------- data
    def get(self, name: str, *, copy: bool = True) -> torch.Tensor:
        """The full tensor, on CPU, in its stored dtype.

        Safetensors reads always return a fresh tensor the caller owns. ``copy`` matters
        only for pickle checkpoints (held in memory): ``copy=False`` returns the held
        tensor itself, for read-only work.
        """
        info = self._info(name)
        if self.kind == "pickle":
            t = self._pickles[info.file][name]
            return t.clone() if copy else t
        return self._pread(info, name, 0, math.prod(info.shape), info.shape)

    def get_slice(
        self, name: str, index: int | slice | Index, *, copy: bool = True
    ) -> torch.Tensor:
        """``tensor[index]`` for ints / slices over leading dims, reading only that part.

        ``copy`` as in :meth:`get`.
        """
        info = self._info(name)
        idx = _normalize_index(name, info.shape, index)
        if self.kind == "pickle":
            t = self._pickles[info.file][name][idx]
            return t.clone() if copy else t
        span = _contiguous_span(info.shape, idx)
        if span is not None:
            return self._pread(info, name, *span)
        t = self._read(info.file, name, lambda h: h.get_slice(name)[idx])
        return t.clone()

    def _pread(
        self, info: TensorInfo, name: str, start: int, count: int, shape: tuple[int, ...]
    ) -> torch.Tensor:
        """Elements ``start .. start + count`` of a tensor, read into a new tensor."""
        itemsize = info.dtype.itemsize
        out = torch.empty(count * itemsize, dtype=torch.uint8)
        if count:
            fd = self._fd(info.file)
            view = memoryview(out.numpy())  # type: ignore[arg-type]
            offset = info.offset + start * itemsize
            done = 0
            try:
                while done < len(view):
                    got = os.preadv(fd, [view[done:]], offset + done)
                    if got <= 0:
                        raise CheckpointError(
                            f"{info.file}: ends inside tensor '{name}'; the file is truncated, "
                            "write it again"
                        )
                    done += got
            except OSError as exc:
                raise CheckpointError(f"{info.file}: cannot read tensor '{name}' ({exc})") from exc
        return out.view(info.dtype).reshape(shape)

    def _fd(self, file: Path) -> int:
        fd = self._fds.get(file)
        if fd is None:
            with self._lock:
                fd = self._fds.get(file)
                if fd is None:
                    try:
                        fd = os.open(file, os.O_RDONLY)
                    except OSError as exc:
                        raise CheckpointError(f"{file}: cannot open ({exc})") from exc
                    self._fds[file] = fd
        return fd

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        with self._lock:
            for handle in self._handles.values():
                handle.__exit__(None, None, None)
            self._handles.clear()
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            self._pickles.clear()
            self._closed = True

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CheckpointReader({str(self.path)!r}, tensors={len(self._keys)}, kind={self.kind})"

    # ---------------------------------------------------------------- internals
    def _info(self, name: str) -> TensorInfo:
        if self._closed:
            raise CheckpointError(f"{self.path}: reader is closed; open a new CheckpointReader")
        try:
            return self._infos[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._keys, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise CheckpointError(f"{self.path}: has no tensor '{name}'{hint}") from None

    def _handle(self, file: Path) -> Any:
        handle = self._handles.get(file)
        if handle is None:
            with self._lock:
                handle = self._handles.get(file)
                if handle is None:
                    handle = _open_safetensors(file)
                    self._handles[file] = handle
        return handle

    def _read(self, file: Path, name: str, fn: Any) -> torch.Tensor:
        try:
            return fn(self._handle(file))  # type: ignore[no-any-return]
        except CheckpointError:
            raise
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise CheckpointError(f"{file}: cannot read tensor '{name}' ({exc})") from exc


def _open_safetensors(file: Path) -> Any:
    try:
        return safe_open(str(file), framework="pt", device="cpu")
    except Exception as exc:  # SafetensorError is not importable under a stable name
        raise CheckpointError(
            f"{file}: safetensors cannot open it ({exc}); the file is corrupt, write it again"
        ) from exc


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: is not valid JSON ({exc}); fix or replace it") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: is not a JSON object; fix or replace it")
    return config


def _merge_files(
    per_file: dict[Path, dict[str, TensorInfo]], layout: Layout
) -> dict[str, TensorInfo]:
    """One name -> info map; a name in two files or an index that disagrees is an error."""
    merged: dict[str, TensorInfo] = {}
    for file, infos in per_file.items():
        for name, info in infos.items():
            if name in merged:
                raise CheckpointError(
                    f"{file}: tensor '{name}' is also in {merged[name].file.name}; "
                    "a tensor must live in exactly one shard, remove the duplicate"
                )
            merged[name] = info
    if layout.weight_map is None:
        if not merged:
            raise CheckpointError(f"{layout.files[0]}: holds no tensors; check the checkpoint")
        return merged
    where = layout.index_path
    for name, file in layout.weight_map.items():
        if name not in merged or merged[name].file != file:
            raise CheckpointError(
                f"{where}: maps tensor '{name}' to {file.name}, but that shard does not hold it; "
                "regenerate the index"
            )
    for name, info in merged.items():
        if name not in layout.weight_map:
            raise CheckpointError(
                f"{where}: does not list tensor '{name}' held by {info.file.name}; "
                "regenerate the index"
            )
    return {name: merged[name] for name in layout.weight_map}


def _normalize_index(name: str, shape: tuple[int, ...], index: int | slice | Index) -> Index:
    items = index if isinstance(index, tuple) else (index,)
    if len(items) > len(shape):
        raise IndexError(f"tensor '{name}' has {len(shape)} dims, index has {len(items)}")
    out: list[int | slice] = []
    for dim, (item, size) in enumerate(zip(items, shape, strict=False)):
        if isinstance(item, bool) or not isinstance(item, int | slice):
            raise TypeError(
                f"tensor '{name}': index {item!r} on dim {dim} is not an int or a slice"
            )
        if isinstance(item, int):
            if not -size <= item < size:
                raise IndexError(
                    f"tensor '{name}': index {item} out of range for dim {dim} of size {size}"
                )
            out.append(item + size if item < 0 else item)
        else:
            if item.step is not None and item.step <= 0:
                raise IndexError(f"tensor '{name}': slice step must be positive, got {item.step}")
            out.append(item)
    return tuple(out)


def _contiguous_span(shape: tuple[int, ...], idx: Index) -> tuple[int, int, tuple[int, ...]] | None:
    """``(first element, count, result shape)`` when ``tensor[idx]`` is one contiguous
    range of the row-major data (leading ints, then at most one unit-step slice)."""
    strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
    start = 0
    for dim, item in enumerate(idx):
        if isinstance(item, int):
            start += (item % shape[dim]) * strides[dim]
            continue
        lo, hi, step = item.indices(shape[dim])
        if step != 1:
            return None
        rest = idx[dim + 1 :]
        if any(
            not (
                isinstance(r, slice) and r.indices(shape[dim + 1 + k]) == (0, shape[dim + 1 + k], 1)
            )
            for k, r in enumerate(rest)
        ):
            return None
        n = max(hi - lo, 0)
        return start + lo * strides[dim], n * strides[dim], (n, *shape[dim + 1 :])
    n_int = len(idx)
    return start, math.prod(shape[n_int:]), tuple(shape[n_int:])

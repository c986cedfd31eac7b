"""Lazy, tensor-by-tensor reader of a Hugging Face checkpoint (safetensors, opt-in pickle).

Opening reads only headers (and the index); every problem that can be seen there is
reported as a :class:`CheckpointError` naming the file. Tensor data is read on ``get`` /
``get_slice`` with positional reads (``os.preadv``, thread-safe) straight into a fresh
tensor, so the caller owns every result and resident memory holds only the tensors
alive, never a growing file mapping: a streamed merge of a model larger than RAM stays
bounded. A slice that is not one contiguous byte range (a step, or slicing a trailing
dim after a leading slice) goes through a ``safe_open`` handle instead and is copied.
With ``drop_cache`` (a merge whose parents cannot stay cached) reads go past the page
cache (``O_DIRECT``) into aligned buffers, or, where the file system refuses that,
through it with the ranges read dropped a batch at a time.

Block-quantized FP8 checkpoints (``quantization_config.quant_method == "fp8"``, a
``<name>_scale_inv`` tensor per FP8 weight) are read dequantized: the scale tensors are
hidden, and every FP8 weight reads as ``dequantize_to`` (bfloat16 by default), see
:mod:`darwinmerge.checkpoint.fp8`.
"""

from __future__ import annotations

import ctypes
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

from darwinmerge.checkpoint.fp8 import FP8_DTYPES, SCALE_SUFFIX, dequantize, fp8_scheme, scale_shape
from darwinmerge.checkpoint.header import TensorInfo, read_safetensors_header
from darwinmerge.checkpoint.layout import Layout, find_layout
from darwinmerge.checkpoint.pickle_files import load_pickle_state_dict, pickle_refusal
from darwinmerge.errors import CheckpointError

__all__ = ["CheckpointReader"]

Index = tuple[int | slice, ...]

#: with ``drop_cache``, the ranges read are dropped from the page cache once this many
#: bytes have been read (bounds the cache a merge leaves behind to about this much)
DROP_BATCH_BYTES = 64 << 20
#: ``O_DIRECT`` reads start, end and land on multiples of this (it covers the logical
#: block sizes of disks in use)
DIRECT_ALIGN = 4096
#: a tensor read past the page cache starts at a multiple of this, as torch's own
#: allocations do
TENSOR_ALIGN = 64


class CheckpointReader:
    """Read the tensors of one checkpoint lazily; see the module docstring."""

    def __init__(
        self,
        path: str | Path,
        *,
        allow_pickle: bool = False,
        dequantize_to: torch.dtype = torch.bfloat16,
        drop_cache: bool = False,
        direct_reads: bool = True,
    ) -> None:
        layout = find_layout(Path(path))
        if layout.kind == "pickle" and not allow_pickle:
            raise pickle_refusal(layout.index_path or layout.files[0])
        self.path: Path = layout.model_dir
        self.config: dict[str, Any] = _read_config(self.path / "config.json")
        self.kind = layout.kind
        #: drop the page cache of every byte range read (merge.api.page_cache_drop decides)
        self.drop_cache = drop_cache
        #: with ``drop_cache``, read past the page cache (``O_DIRECT``) where the file system
        #: allows it; False: buffered reads, their ranges dropped in batches (the merge
        #: options' ``direct_reads``)
        self.direct_reads = direct_reads
        #: where reads get their buffers (a merge's :class:`~darwinmerge.merge.buffers.
        #: BufferPool`, which recycles them); None: a fresh tensor per read
        self.pool: Any = None
        #: bytes of this checkpoint's weight files
        self.file_bytes = sum(f.stat().st_size for f in layout.files)
        self._lock = threading.Lock()
        self._handles: dict[Path, Any] = {}
        self._fds: dict[Path, int] = {}
        self._direct_fds: dict[Path, int | None] = {}
        # ranges read but not yet dropped from the page cache (drop_cache): file -> (its
        # descriptor, [(start, end)]), and their bytes
        self._to_forget: dict[Path, tuple[int, list[tuple[int, int]]]] = {}
        self._forget_bytes = 0
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
        self.dequantize_to = dequantize_to
        #: FP8 weight name -> its scale tensor's name (empty unless block-quantized FP8)
        self._scales: dict[str, str] = {}
        self._block = (128, 128)
        if layout.kind == "safetensors":
            self._find_fp8()
        self._hidden = set(self._scales.values())
        self._keys = [k for k in self._infos if k not in self._hidden]

    # ----------------------------------------------------------------- metadata
    def keys(self) -> list[str]:
        """All tensor names: index order when there is an index, else file then offset order."""
        return list(self._keys)

    def __contains__(self, name: object) -> bool:
        return name in self._infos and name not in self._hidden

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
        """The dtype ``get`` returns (``dequantize_to`` for a block-quantized FP8 weight)."""
        info = self._info(name)
        return self.dequantize_to if name in self._scales else info.dtype

    def nbytes(self, name: str) -> int:
        info = self._info(name)
        if name in self._scales:
            return math.prod(info.shape) * self.dequantize_to.itemsize
        return info.nbytes

    def total_bytes(self) -> int:
        return sum(self.nbytes(name) for name in self._keys)

    @property
    def quantized(self) -> bool:
        """True when the checkpoint holds block-quantized FP8 weights (read dequantized)."""
        return bool(self._scales)

    def _find_fp8(self) -> None:
        """Pair every FP8 weight with its ``_scale_inv`` tensor and check the shapes."""
        fp8 = [n for n, i in self._infos.items() if i.dtype in FP8_DTYPES]
        paired = [n for n in fp8 if n + SCALE_SUFFIX in self._infos]
        if not paired:
            return
        where = self.path / "config.json"
        scheme = fp8_scheme(self.config, where)
        if scheme is None:
            raise CheckpointError(
                f"{where}: tensor '{paired[0]}' is FP8 with a '{paired[0]}{SCALE_SUFFIX}' "
                "scale, but config.json has no quantization_config with quant_method 'fp8'; "
                "add the model's quantization_config"
            )
        self._block = scheme.block
        for name in paired:
            info, sname = self._infos[name], name + SCALE_SUFFIX
            want = scale_shape(info.shape, scheme.block)
            got = self._infos[sname].shape
            if len(info.shape) < 2 or got != want:
                raise CheckpointError(
                    f"{info.file}: scale '{sname}' has shape {list(got)}, but weight '{name}' "
                    f"{list(info.shape)} in {list(scheme.block)} blocks needs {list(want)}; "
                    "the checkpoint is inconsistent, download it again"
                )
            self._scales[name] = sname

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
        if name in self._scales:
            return self._dequantized(name, ())
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
        if name in self._scales:
            if len(idx) <= len(info.shape) - 2:  # leading dims only: slice Q and S alike
                return self._dequantized(name, idx)
            return self._dequantized(name, ())[idx].clone()
        return self._raw_slice(info, name, idx)

    def _raw_slice(self, info: TensorInfo, name: str, idx: Index) -> torch.Tensor:
        span = _contiguous_span(info.shape, idx)
        if span is not None:
            return self._pread(info, name, *span)
        t = self._read(info.file, name, lambda h: h.get_slice(name)[idx])
        return t.clone()

    def _dequantized(self, name: str, idx: Index) -> torch.Tensor:
        """``W[idx]`` of an FP8 weight (``idx`` over leading dims only), dequantized."""
        info = self._infos[name]
        sname = self._scales[name]
        sinfo = self._infos[sname]
        if idx:
            scale = self._raw_slice(sinfo, sname, idx)
        else:
            scale = self._pread(sinfo, sname, 0, math.prod(sinfo.shape), sinfo.shape)
        if idx:
            q = self._raw_slice(info, name, idx)
            shape = tuple(q.shape)
            flat = q.reshape(-1, shape[-1])

            def read_q(first: int, rows: int) -> torch.Tensor:
                return flat[first : first + rows]
        else:
            shape = info.shape
            k = shape[-1]

            def read_q(first: int, rows: int) -> torch.Tensor:
                return self._pread(info, name, first * k, rows * k, (rows, k))

        try:
            return dequantize(read_q, scale, shape, self._block, self.dequantize_to)
        except RuntimeError as exc:
            raise CheckpointError(f"{info.file}: cannot dequantize '{name}' ({exc})") from exc

    def _pread(
        self, info: TensorInfo, name: str, start: int, count: int, shape: tuple[int, ...]
    ) -> torch.Tensor:
        """Elements ``start .. start + count`` of a tensor, read into a new tensor."""
        itemsize = info.dtype.itemsize
        offset = info.offset + start * itemsize
        nbytes = count * itemsize
        if count and self.drop_cache:
            fd = self._direct_fd(info.file)
            if fd is not None:
                return (
                    self._pread_direct(fd, info, name, offset, nbytes)
                    .view(info.dtype)
                    .reshape(shape)
                )
        out = self._buffer(nbytes)
        if count:
            fd = self._fd(info.file)
            try:
                done = _pread_into(fd, memoryview(out.numpy()), offset, info.file, name)  # type: ignore[arg-type]
            except OSError as exc:
                raise CheckpointError(f"{info.file}: cannot read tensor '{name}' ({exc})") from exc
            if self.drop_cache:
                self._forget(info.file, fd, offset, offset + done)
        return out.view(info.dtype).reshape(shape)

    def _buffer(self, nbytes: int) -> torch.Tensor:
        """A uint8 buffer for a read: from the pool when there is one."""
        pool = self.pool
        return pool.take(nbytes) if pool is not None else torch.empty(nbytes, dtype=torch.uint8)

    def _pread_direct(
        self, fd: int, info: TensorInfo, name: str, offset: int, nbytes: int
    ) -> torch.Tensor:
        """The bytes ``offset .. offset + nbytes`` of ``info.file`` read past the page cache
        (``O_DIRECT``): the whole pages around them go from the disk straight into an
        aligned buffer, and the result is a view of it. No copy out of the cache and no
        cached page to drop, and the buffer (a pool's, already in memory) is reused."""
        first = offset - offset % DIRECT_ALIGN
        end = -(-(offset + nbytes) // DIRECT_ALIGN) * DIRECT_ALIGN
        raw = self._buffer(end - first + DIRECT_ALIGN)
        pad = -raw.data_ptr() % DIRECT_ALIGN
        view = memoryview(raw[pad : pad + end - first].numpy())  # type: ignore[arg-type]
        need = offset + nbytes - first
        done = 0
        try:
            while done < need:
                got = os.preadv(fd, [view[done:]], first + done)
                if got <= 0 or got % DIRECT_ALIGN:
                    done += max(got, 0)
                    break  # the end of the file (or an odd short read): the rest buffered
                done += got
            if done < need:
                _pread_into(self._fd(info.file), view[done:need], first + done, info.file, name)
        except OSError as exc:
            raise CheckpointError(f"{info.file}: cannot read tensor '{name}' ({exc})") from exc
        skip = pad + offset - first
        shift = (raw.data_ptr() + skip) % TENSOR_ALIGN
        if shift:
            # where a tensor starts inside a page is the file's business; results must not
            # depend on it (BLAS reductions sum in an order that follows the address), so
            # the data moves down to the alignment every torch allocation has
            ctypes.memmove(raw.data_ptr() + skip - shift, raw.data_ptr() + skip, nbytes)
            skip -= shift
        return raw[skip : skip + nbytes]

    def _forget(self, file: Path, fd: int, start: int, end: int) -> None:
        """Let the kernel forget the file pages of a range read once (whole pages only),
        instead of reclaiming them under pressure. Ranges are collected and dropped a
        batch at a time, merged where they touch: one ``posix_fadvise(DONTNEED)`` per
        small read cost up to 4 ms (8-18 s of system time over 4,400 reads of 2 MiB,
        against 0.5 s dropped every 16 MiB or more)."""
        with self._lock:
            self._to_forget.setdefault(file, (fd, []))[1].append((start, end))
            self._forget_bytes += end - start
            if self._forget_bytes < DROP_BATCH_BYTES:
                return
            batch, self._to_forget, self._forget_bytes = self._to_forget, {}, 0
        _drop_ranges(batch)

    def _direct_fd(self, file: Path) -> int | None:
        """``file`` opened with ``O_DIRECT``; None where that is off or refused (tmpfs, some
        network file systems): reads then go through the page cache."""
        if file not in self._direct_fds:
            with self._lock:
                if file not in self._direct_fds:
                    fd = None
                    if self.direct_reads and hasattr(os, "O_DIRECT"):
                        try:
                            fd = os.open(file, os.O_RDONLY | os.O_DIRECT)
                        except OSError:
                            fd = None
                    self._direct_fds[file] = fd
        return self._direct_fds[file]

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
            batch, self._to_forget, self._forget_bytes = self._to_forget, {}, 0
            _drop_ranges(batch)
            for handle in self._handles.values():
                handle.__exit__(None, None, None)
            self._handles.clear()
            for fd in [*self._fds.values(), *self._direct_fds.values()]:
                if fd is not None:
                    os.close(fd)
            self._fds.clear()
            self._direct_fds.clear()
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
            if name in self._hidden:
                raise KeyError(name)
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


def _pread_into(fd: int, view: memoryview, offset: int, file: Path, name: str) -> int:
    """Fill ``view`` from ``fd`` at ``offset`` (positional reads until it is full)."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise CheckpointError(
                f"{file}: ends inside tensor '{name}'; the file is truncated, write it again"
            )
        done += got
    return done


def _drop_ranges(batch: dict[Path, tuple[int, list[tuple[int, int]]]]) -> None:
    """``posix_fadvise(DONTNEED)`` over each file's ranges, merged where they meet."""
    for fd, ranges in batch.values():
        ranges.sort()
        start, end = ranges[0]
        for s, e in ranges[1:]:
            if s > end:
                os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
                start = s
            end = max(end, e)
        os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)


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

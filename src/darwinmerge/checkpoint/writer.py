"""Streaming, byte-sharded, atomic writer of a Hugging Face safetensors checkpoint.

Tensors are buffered until the next one would push the buffer past
``max_shard_bytes``; the buffer is then written as one shard file and dropped. So at
most one shard buffer plus the tensor being added is held (a single tensor larger than
``max_shard_bytes`` gets a shard of its own).

When the caller knows every tensor up front (the merge planner does), ``plan()`` lays
out the shards and their headers at once and ``add`` writes each tensor's bytes straight
to its place in its shard file (``shard_file.ShardFile``: data aligned to 4 KiB and
written with ``O_DIRECT`` where supported, ``direct_io=False`` to turn that off): nothing
is buffered beyond a 64 MiB bounce buffer, so memory holds one tensor at a time.

Everything goes to a hidden temporary sibling folder; ``commit`` renames the shards to
``model-0000i-of-0000N.safetensors`` (``model.safetensors`` when there is one shard,
with no index, as Hugging Face does), writes ``model.safetensors.index.json`` and moves
the folder into place with ``os.rename``, so the output path holds either the old
content or the complete new one.

Faults: ``plan()`` refuses to start when the output's file system has less free space
than the planned child (:class:`DiskFullError`, naming both sizes), and a write that
fails for lack of space mid-way says the same; either way the temporary folder is
removed. The temporary folder holds a ``.darwin-writer`` file with the writing process's
id; a later writer of the same output removes temporary folders whose process is gone
(a run killed with SIGKILL) and lists them in :attr:`CheckpointWriter.notes`.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from safetensors.torch import save_file

from darwinmerge.atomic import move_into_place, replace_file
from darwinmerge.checkpoint.header import SAFETENSORS_DTYPES
from darwinmerge.checkpoint.layout import SAFE_INDEX, SAFE_SINGLE
from darwinmerge.checkpoint.shard_file import ShardFile
from darwinmerge.errors import CheckpointError, DiskFullError, OutputExistsError

__all__ = ["CheckpointWriter", "DEFAULT_MAX_SHARD_BYTES"]

DEFAULT_MAX_SHARD_BYTES = 5 * 2**30
_ST_DTYPES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


class CheckpointWriter:
    """Write tensors one by one into a sharded safetensors model directory."""

    def __init__(
        self,
        out_dir: str | Path,
        *,
        force: bool = False,
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
        metadata: dict[str, str] | None = None,
        direct_io: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir)
        if max_shard_bytes <= 0:
            raise CheckpointError(
                f"{self.out_dir}: max_shard_bytes must be positive, got {max_shard_bytes}"
            )
        meta = dict(metadata or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise CheckpointError(f"{self.out_dir}: metadata keys and values must all be strings")
        self._metadata = {**meta, "format": "pt"}
        if self.out_dir.exists() or self.out_dir.is_symlink():
            if not force:
                raise OutputExistsError(
                    f"{self.out_dir}: already exists; choose another output path or pass --force "
                    "to replace it"
                )
            if not self.out_dir.is_dir() or self.out_dir.is_symlink():
                raise OutputExistsError(
                    f"{self.out_dir}: exists and is not a directory; remove it or pick another path"
                )
        self.force = force
        self.max_shard_bytes = max_shard_bytes
        #: what the writer did besides writing (stale temporary folders it removed)
        self.notes: list[str] = []
        parent = self.out_dir.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.notes = clear_stale_temps(self.out_dir)
            self.tmp_dir = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.tmp-", dir=parent))
            os.chmod(self.tmp_dir, 0o777 & ~_umask())  # mkdtemp's 0700 would stick to the child
            (self.tmp_dir / OWNER_FILE).write_text(json.dumps(_owner()), "utf-8")
        except OSError as exc:
            if getattr(self, "tmp_dir", None) is not None:
                shutil.rmtree(self.tmp_dir, ignore_errors=True)
            if exc.errno in _NO_SPACE:
                raise DiskFullError(
                    f"{parent}: no free space to start the output ({exc.strerror}); "
                    "free space or choose another output folder"
                ) from exc
            raise CheckpointError(
                f"{parent}: cannot write the output there ({exc.strerror}); "
                "choose a writable output folder"
            ) from exc
        self._buffer: dict[str, torch.Tensor] = {}
        self._buffer_bytes = 0
        self.peak_buffer_bytes = 0  # largest buffer ever held, for tests and logs
        self._shards: list[tuple[Path, list[str]]] = []
        self._names: set[str] = set()
        self._total_bytes = 0
        self._total_params = 0
        self._state = "open"
        # planned (direct-write) mode
        self._planned: list[tuple[str, torch.dtype, tuple[int, ...], int]] | None = None
        self._next = 0
        self._file: ShardFile | None = None
        self.direct_io = direct_io

    # ------------------------------------------------------------------ writing
    @property
    def buffer_bytes(self) -> int:
        """Bytes of tensor data currently buffered (not yet in a shard file)."""
        return self._buffer_bytes

    @property
    def num_tensors(self) -> int:
        return len(self._names)

    def plan(self, entries: Sequence[tuple[str, torch.dtype, Sequence[int]]]) -> None:
        """Announce every tensor (name, dtype, shape) in the order ``add`` will receive them.

        Shards are cut by the same rule as in buffered mode; each shard's header is
        written when the shard is opened and every ``add`` writes its bytes in place."""
        self._require_open()
        if self._names or self._planned is not None:
            raise CheckpointError(f"{self.out_dir}: plan() must come before any add()")
        if not entries:
            raise CheckpointError(f"{self.out_dir}: plan() got no tensors")
        seen: set[str] = set()
        shards: list[list[tuple[str, torch.dtype, tuple[int, ...]]]] = [[]]
        size = 0
        for name, dtype, shape in entries:
            if name in seen:
                raise CheckpointError(f"{self.out_dir}: tensor '{name}' is planned twice")
            seen.add(name)
            nbytes = math.prod(shape) * dtype.itemsize
            if shards[-1] and size + nbytes > self.max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append((name, dtype, tuple(int(d) for d in shape)))
            size += nbytes
        # data + headers (about 128 bytes of JSON per tensor, padded to 4 KiB per shard)
        needed = sum(math.prod(s) * d.itemsize + 128 + len(n) for n, d, s in entries)
        needed += len(shards) * 4096
        free = _free_bytes(self.tmp_dir)
        if free is not None and free < needed:
            raise DiskFullError(
                f"{self.out_dir.parent}: the child needs {_size(needed)} free, only "
                f"{_size(free)} free there; free space or choose another output folder"
            )
        self._planned_bytes = needed
        planned = []
        for i, shard in enumerate(shards):
            for name, dtype, shape in shard:
                planned.append((name, dtype, shape, i))
        self._planned = planned
        self._shard_entries = shards

    def _open_planned_shard(self, i: int) -> None:
        entries = self._shard_entries[i]
        header: dict[str, Any] = {"__metadata__": self._metadata}
        offset = 0
        for name, dtype, shape in entries:
            nbytes = math.prod(shape) * dtype.itemsize
            header[name] = {
                "dtype": _ST_DTYPES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
        path = self.tmp_dir / f".shard-{i + 1:05d}.partial"
        self._file = ShardFile(path, header, direct=self.direct_io)
        self._shards.append((path, [name for name, _, _ in entries]))

    def _add_planned(self, name: str, tensor: torch.Tensor) -> None:
        assert self._planned is not None
        if self._next >= len(self._planned):
            raise CheckpointError(f"{self.out_dir}: tensor '{name}' was not planned")
        want, dtype, shape, shard = self._planned[self._next]
        if name != want or tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise CheckpointError(
                f"{self.out_dir}: expected tensor '{want}' {dtype} {list(shape)} next, got "
                f"'{name}' {tensor.dtype} {list(tensor.shape)}"
            )
        if self._next == 0 or self._planned[self._next - 1][3] != shard:
            self._close_planned_shard()
            self._open_planned_shard(shard)
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        assert self._file is not None
        try:
            self._file.write(memoryview(data.numpy()))  # type: ignore[arg-type]
        except CheckpointError as exc:
            raise self._space_error(exc) from exc
        self._next += 1
        self._names.add(name)
        self._total_bytes += data.numel()
        self._total_params += tensor.numel()

    def _close_planned_shard(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except CheckpointError as exc:
                raise self._space_error(exc) from exc

    def _space_error(self, exc: CheckpointError) -> CheckpointError:
        """A one-line DiskFullError when ``exc`` was a full disk, else ``exc`` itself."""
        cause = exc.__cause__
        if not (isinstance(cause, OSError) and cause.errno in _NO_SPACE):
            return exc
        total = getattr(self, "_planned_bytes", self._total_bytes)
        free = _free_bytes(self.tmp_dir)
        now = f"{_size(free)} free now" if free is not None else "the disk is full"
        return DiskFullError(
            f"{self.out_dir.parent}: the disk filled up while writing the child ({now}); "
            f"the child needs {_size(total)} free; nothing was kept, free space and run again"
        )

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Queue ``tensor`` under ``name``; its value is snapshotted, the caller may reuse it."""
        self._require_open()
        if self._planned is not None:
            if not isinstance(tensor, torch.Tensor) or name in self._names:
                raise CheckpointError(f"{self.out_dir}: tensor '{name}' is not a new tensor")
            self._add_planned(name, tensor)
            return
        if not isinstance(name, str) or not name:
            raise CheckpointError(
                f"{self.out_dir}: tensor name must be a non-empty string, got {name!r}"
            )
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(
                f"{self.out_dir}: '{name}' is a {type(tensor).__name__}, not a tensor"
            )
        if name in self._names:
            raise CheckpointError(
                f"{self.out_dir}: tensor '{name}' was added twice; names must be unique"
            )
        if tensor.is_sparse or tensor.layout != torch.strided:
            raise CheckpointError(
                f"{self.out_dir}: tensor '{name}' is not dense; call .to_dense() first"
            )
        size = tensor.numel() * tensor.element_size()
        if self._buffer and self._buffer_bytes + size > self.max_shard_bytes:
            self._flush()
        self._buffer[name] = _owned_cpu_copy(tensor)
        self._names.add(name)
        self._buffer_bytes += size
        self._total_bytes += size
        self._total_params += tensor.numel()
        self.peak_buffer_bytes = max(self.peak_buffer_bytes, self._buffer_bytes)

    def _flush(self) -> None:
        if not self._buffer:
            return
        path = self.tmp_dir / f".shard-{len(self._shards) + 1:05d}.partial"
        try:
            save_file(self._buffer, str(path), metadata=self._metadata)
            _fsync(path)
        except (OSError, ValueError, RuntimeError) as exc:
            err = CheckpointError(f"{path}: cannot write shard ({exc}); check free disk space")
            err.__cause__ = exc
            raise self._space_error(err) from exc
        self._shards.append((path, list(self._buffer)))
        self._buffer = {}
        self._buffer_bytes = 0

    # ---------------------------------------------------------------- finishing
    def commit(self) -> Path:
        """Write the last shard and the index, then move the folder to ``out_dir``."""
        self._require_open()
        if not self._names:
            raise CheckpointError(f"{self.out_dir}: no tensors were added; nothing to write")
        if self._planned is not None:
            if self._next != len(self._planned):
                missing = self._planned[self._next][0]
                raise CheckpointError(
                    f"{self.out_dir}: {len(self._planned) - self._next} planned tensors were "
                    f"never added (first: '{missing}')"
                )
            self._close_planned_shard()
        self._flush()
        n = len(self._shards)
        weight_map: dict[str, str] = {}
        for i, (tmp_path, names) in enumerate(self._shards, start=1):
            final = SAFE_SINGLE if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
            if (self.tmp_dir / final).exists():
                raise CheckpointError(
                    f"{self.tmp_dir / final}: was written by someone else; do not "
                    "write weight files into tmp_dir"
                )
            replace_file(tmp_path, self.tmp_dir / final)
            weight_map.update(dict.fromkeys(names, final))
        if n > 1:
            index = {
                "metadata": {
                    "total_size": self._total_bytes,
                    "total_parameters": self._total_params,
                },
                "weight_map": weight_map,
            }
            index_path = self.tmp_dir / SAFE_INDEX
            try:
                index_path.write_text(json.dumps(index, indent=2) + "\n", "utf-8")
                _fsync(index_path)
            except OSError as exc:
                err = CheckpointError(f"{index_path}: cannot write ({exc})")
                err.__cause__ = exc
                raise self._space_error(err) from exc
        (self.tmp_dir / OWNER_FILE).unlink(missing_ok=True)
        self._move_into_place()
        self._state = "committed"
        return self.out_dir

    def _move_into_place(self) -> None:
        if self.out_dir.exists() and not self.force:
            raise OutputExistsError(
                f"{self.out_dir}: appeared while writing; pass --force to replace it"
            )
        try:
            move_into_place(self.tmp_dir, self.out_dir)
        except OSError as exc:
            raise CheckpointError(
                f"{self.out_dir}: cannot move the finished model into place ({exc})"
            ) from exc

    def abort(self) -> None:
        """Drop everything written so far; ``out_dir`` is left untouched."""
        if self._file is not None:
            self._file.abort()
            self._file = None
        self._buffer = {}
        self._buffer_bytes = 0
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        if self._state == "open":
            self._state = "aborted"

    def _require_open(self) -> None:
        if self._state != "open":
            raise CheckpointError(
                f"{self.out_dir}: writer is already {self._state}; create a new one"
            )

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
            return
        if self._state == "open":
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise


def _owned_cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor that owns its whole storage and shares nothing with ``tensor``."""
    src = tensor.detach()
    out = src.to("cpu").contiguous()
    shares = out.untyped_storage().data_ptr() == src.untyped_storage().data_ptr()
    if shares or out.untyped_storage().nbytes() != out.numel() * out.element_size():
        out = out.clone(memory_format=torch.contiguous_format)
    return out


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


OWNER_FILE = ".darwin-writer"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _owner() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid())}


def _alive(owner: dict[str, object]) -> bool:
    pid = owner.get("pid")
    if not isinstance(pid, int) or owner.get("host") != socket.gethostname():
        return True  # another machine's (or unreadable) writer: never touch it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = owner.get("start")
    return start is None or _start_time(pid) in (None, start)  # a reused pid is not alive


def clear_stale_temps(out_dir: Path) -> list[str]:
    """Remove the temporary folders of ``out_dir`` left by writers that died (SIGKILL,
    power loss); returns one note per folder removed. Folders whose writer still runs,
    runs on another host, or cannot be identified are left alone."""
    notes: list[str] = []
    parent = out_dir.parent
    if not parent.is_dir():
        return notes
    for tmp in sorted(parent.glob(f".{out_dir.name}.tmp-*")):
        try:
            owner = json.loads((tmp / OWNER_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(owner, dict) or _alive(owner):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        notes.append(
            f"removed {tmp}: a temporary folder left by an interrupted run "
            f"(process {owner.get('pid')} is gone)"
        )
    return notes

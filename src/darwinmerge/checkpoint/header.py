"""Read and check the header of one ``.safetensors`` file without touching its data.

Layout of the format: 8 bytes little-endian ``u64`` = N, then N bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``),
then the data block; offsets are relative to the start of the data block.
Checking the header against the file size catches truncated and corrupt files at
open time for the cost of one small read per file.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from darwinmerge.errors import CheckpointError

__all__ = ["TensorInfo", "SAFETENSORS_DTYPES", "read_safetensors_header"]

# The upper bound the reference implementation also uses for the header size.
_MAX_HEADER_BYTES = 100_000_000

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "U16": torch.uint16,
    "I32": torch.int32,
    "U32": torch.uint32,
    "I64": torch.int64,
    "U64": torch.uint64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "C64": torch.complex64,
}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it looks like (from the header only)."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    nbytes: int
    offset: int = -1  # absolute file offset of the data (-1: not a safetensors file)


def _bad(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: {what}; the file is truncated or corrupt, download or write it again"
    )


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Return ``({name: TensorInfo}, metadata)`` in data-offset order, or raise CheckpointError."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise _bad(path, f"file is {size} bytes, shorter than the 8-byte header length")
            n = int.from_bytes(prefix, "little")
            if n > size - 8:
                raise _bad(path, f"header length {n} runs past the end of the file ({size} bytes)")
            if n > _MAX_HEADER_BYTES:
                raise _bad(path, f"header length {n} exceeds {_MAX_HEADER_BYTES} bytes")
            raw = fh.read(n)
    except OSError as exc:
        raise CheckpointError(
            f"{path}: cannot read ({exc}); check the path and permissions"
        ) from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    data_len = size - 8 - n
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise _bad(path, "__metadata__ is not an object")
    rows: list[tuple[int, str, TensorInfo]] = []
    for name, entry in header.items():
        begin, _, info = _check_entry(path, name, entry, data_len)
        rows.append((begin, name, dataclasses.replace(info, offset=8 + n + begin)))
    rows.sort(key=lambda r: (r[0], r[1]))
    return {name: info for _, name, info in rows}, {str(k): str(v) for k, v in meta.items()}


def _check_entry(
    path: Path, name: str, entry: object, data_len: int
) -> tuple[int, str, TensorInfo]:
    if not isinstance(entry, dict):
        raise _bad(path, f"header entry of tensor '{name}' is not an object")
    try:
        dtype_name = entry["dtype"]
        shape = tuple(int(d) for d in entry["shape"])
        begin, end = (int(o) for o in entry["data_offsets"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(path, f"header entry of tensor '{name}' is malformed") from exc
    if dtype_name not in SAFETENSORS_DTYPES:
        raise CheckpointError(
            f"{path}: tensor '{name}' has dtype {dtype_name}, which darwinmerge cannot read; "
            f"convert it to one of {', '.join(SAFETENSORS_DTYPES)}"
        )
    dtype = SAFETENSORS_DTYPES[dtype_name]
    if any(d < 0 for d in shape) or not 0 <= begin <= end:
        raise _bad(path, f"tensor '{name}' has a negative shape or offsets {begin}..{end}")
    if end > data_len:
        raise _bad(
            path,
            f"tensor '{name}' ends at data offset {end} but the data block is {data_len} bytes",
        )
    expected = math.prod(shape) * dtype.itemsize
    if end - begin != expected:
        raise _bad(
            path,
            f"tensor '{name}' spans {end - begin} bytes but shape {list(shape)} x "
            f"{dtype_name} needs {expected}",
        )
    return begin, name, TensorInfo(file=path, dtype=dtype, shape=shape, nbytes=expected)

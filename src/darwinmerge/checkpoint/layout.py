"""Find the weight files of a checkpoint: which files, which format, which index.

Order of preference inside a model directory:

1. ``model.safetensors.index.json`` (sharded safetensors)
2. ``model.safetensors``
3. every other ``*.safetensors`` file, sorted by name
4. ``pytorch_model.bin.index.json`` (sharded pickle)
5. ``pytorch_model.bin``
6. ``*.pt`` / ``*.pth`` files, sorted, except trainer state (optimizer, scheduler, rng)

A path to one weight file or one ``*.index.json`` is used as given. Shards named by an
index must resolve inside the model directory (absolute names, ``..`` and symlinks that
lead elsewhere are refused); inside a Hugging Face hub cache snapshot, symlinks into
the repository's own ``blobs/`` folder are allowed, because that is how the cache
stores every file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from darwinmerge.errors import CheckpointError

__all__ = ["Layout", "find_layout", "SAFE_INDEX", "SAFE_SINGLE", "PICKLE_INDEX", "PICKLE_SINGLE"]

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SINGLE = "pytorch_model.bin"
_NOT_WEIGHTS = ("optimizer", "scheduler", "rng_state", "training_args")

Kind = Literal["safetensors", "pickle"]


@dataclass(frozen=True)
class Layout:
    """The weight files of one checkpoint, before any of them is opened."""

    model_dir: Path
    kind: Kind
    files: tuple[Path, ...]
    index_path: Path | None = None
    # tensor name -> shard file, in index order; None when there is no index
    weight_map: dict[str, Path] | None = None


def find_layout(path: Path) -> Layout:
    """Work out the files to read for ``path`` (a model directory or one file)."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory; check the model path")
    if path.is_file():
        return _layout_for_file(path)
    if (path / SAFE_INDEX).is_file():
        return _layout_from_index(path / SAFE_INDEX, "safetensors")
    if (path / SAFE_SINGLE).is_file():
        return Layout(path, "safetensors", (path / SAFE_SINGLE,))
    safe = _safetensors_files(path)
    if safe:
        return Layout(path, "safetensors", tuple(safe))
    if (path / PICKLE_INDEX).is_file():
        return _layout_from_index(path / PICKLE_INDEX, "pickle")
    if (path / PICKLE_SINGLE).is_file():
        return Layout(path, "pickle", (path / PICKLE_SINGLE,))
    pickles = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and p.suffix in (".pt", ".pth") and not p.name.startswith(_NOT_WEIGHTS)
    )
    if pickles:
        return Layout(path, "pickle", tuple(pickles))
    raise CheckpointError(
        f"{path}: no weights found; expected {SAFE_SINGLE}, {SAFE_INDEX}, *.safetensors "
        f"(or, with --allow-pickle, {PICKLE_SINGLE} / *.pt)"
    )


def _safetensors_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.safetensors") if p.is_file())


def _layout_for_file(path: Path) -> Layout:
    name = path.name
    if name.endswith(".index.json"):
        kind: Kind = "safetensors" if ".safetensors." in name else "pickle"
        return _layout_from_index(path, kind)
    if name.endswith(".safetensors"):
        return Layout(path.parent, "safetensors", (path,))
    if path.suffix in (".bin", ".pt", ".pth"):
        return Layout(path.parent, "pickle", (path,))
    raise CheckpointError(
        f"{path}: not a weight file; pass a model directory, a .safetensors file or an index"
    )


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key '{key}' appears twice")
        out[key] = value
    return out


def _layout_from_index(index_path: Path, kind: Kind) -> Layout:
    model_dir = index_path.parent
    try:
        data = json.loads(index_path.read_text("utf-8"), object_pairs_hook=_reject_duplicate_keys)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(
            f"{index_path}: cannot parse the index ({exc}); fix or regenerate the index file"
        ) from exc
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(
            f"{index_path}: has no non-empty 'weight_map' object; regenerate the index file"
        )
    roots = _allowed_roots(model_dir)
    resolved: dict[str, Path] = {}
    files: dict[Path, None] = {}
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or not shard:
            raise CheckpointError(
                f"{index_path}: tensor '{tensor}' maps to {shard!r}, not a file name"
            )
        shard_path = resolved.get(shard) or _contained_shard(index_path, model_dir, shard, roots)
        resolved[shard] = shard_path
        files.setdefault(shard_path, None)
    mapping = {tensor: resolved[shard] for tensor, shard in weight_map.items()}
    return Layout(model_dir, kind, tuple(files), index_path, mapping)


def _allowed_roots(model_dir: Path) -> list[Path]:
    roots = [model_dir.resolve()]
    lexical = model_dir.absolute()
    if lexical.parent.name == "snapshots" and (lexical.parent.parent / "blobs").is_dir():
        roots.append((lexical.parent.parent / "blobs").resolve())
    return roots


def _contained_shard(index_path: Path, model_dir: Path, shard: str, roots: list[Path]) -> Path:
    candidate = Path(shard)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise CheckpointError(
            f"{index_path}: shard '{shard}' points outside the model directory; "
            "the index must name files inside it"
        )
    target = model_dir / candidate
    real = target.resolve()
    if not any(real.is_relative_to(root) for root in roots):
        raise CheckpointError(
            f"{index_path}: shard '{shard}' resolves to {real}, outside the model directory; "
            "copy the shard into the model directory instead of linking it"
        )
    if not target.is_file():
        raise CheckpointError(
            f"{index_path}: names shard '{shard}', which is missing from {model_dir}; "
            "download the missing shard or regenerate the index"
        )
    return target

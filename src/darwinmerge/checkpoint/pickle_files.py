"""Opt-in loading of pickle checkpoints (``pytorch_model.bin``, ``*.pt``).

A pickle can run code when it is loaded, so the reader refuses these files unless the
caller passes ``allow_pickle=True`` (CLI: ``--allow-pickle``). Even then the file is
loaded with ``torch.load(weights_only=True, mmap=True)``: only tensors and plain
containers are unpickled, and tensor data stays on disk until it is used.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from darwinmerge.errors import CheckpointError

__all__ = ["pickle_refusal", "load_pickle_state_dict"]

_WRAPPERS = ("state_dict", "model", "module")


def pickle_refusal(path: Path) -> CheckpointError:
    """The error raised when a pickle checkpoint is met without permission."""
    return CheckpointError(
        f"{path}: is a pickle checkpoint, which can run code when loaded; pass "
        "allow_pickle=True (CLI: --allow-pickle) to load it with torch.load(weights_only=True), "
        "or convert it to safetensors first"
    )


def load_pickle_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a flat ``{name: tensor}`` dict from a pickle file (memory-mapped when possible)."""
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # legacy (non-zip) files cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(
            f"{path}: cannot load as a weights-only pickle ({str(exc).splitlines()[0]}); "
            "the file is corrupt or holds more than tensors, convert it to safetensors"
        ) from exc
    return _flat_state_dict(path, obj)


def _flat_state_dict(path: Path, obj: object) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), dict):
                return _flat_state_dict(path, obj[key])
        raise CheckpointError(f"{path}: holds no tensors; it is not a model state dict")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}

"""Helpers for the arch tests: read a tiny checkpoint with safetensors directly
(so that these tests do not depend on darwinmerge.checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from darwinmerge.arch import Architecture, detect_architecture


def read_header(path: Path) -> tuple[dict, list[str], dict[str, tuple[int, ...]]]:
    config = json.loads((path / "config.json").read_text())
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
    return config, keys, shapes


def arch_of(path: Path) -> Architecture:
    return detect_architecture(*read_header(path))


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}

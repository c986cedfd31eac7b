"""Fixtures for the checkpoint tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .ckpt_builders import tiny_tensors, write_sharded


@pytest.fixture
def tensors() -> dict[str, torch.Tensor]:
    return tiny_tensors()


@pytest.fixture
def sharded_dir(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    names = list(tensors)
    write_sharded(tmp_path / "m", tensors, [names[:3], names[3:5], names[5:]])
    return tmp_path / "m"

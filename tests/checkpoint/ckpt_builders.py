"""Builders of tiny checkpoints on disk for the checkpoint tests (imported by them)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def tiny_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """A handful of tensors of mixed dtypes and ranks, including a fused-expert 3D one."""
    g = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(16, 8, generator=g),
        "layers.0.attn.q.weight": torch.randn(8, 8, generator=g).to(torch.bfloat16),
        "layers.0.mlp.experts.gate_up": torch.randn(4, 6, 8, generator=g).to(torch.float16),
        "layers.0.norm.weight": torch.rand(8, generator=g),
        "layers.1.attn.q.weight": torch.randn(8, 8, generator=g).to(torch.bfloat16),
        "scale": torch.tensor(1.5),
        "position_ids": torch.arange(12, dtype=torch.int64),
    }


def write_sharded(
    model_dir: Path,
    tensors: dict[str, torch.Tensor],
    groups: list[list[str]],
    *,
    weight_map: dict[str, str] | None = None,
) -> dict[str, str]:
    """Write ``groups`` of tensors as HF-style shards plus an index; returns the weight map."""
    model_dir.mkdir(parents=True, exist_ok=True)
    n = len(groups)
    wm: dict[str, str] = {}
    for i, names in enumerate(groups, start=1):
        fname = f"model-{i:05d}-of-{n:05d}.safetensors"
        save_file({k: tensors[k] for k in names}, str(model_dir / fname), metadata={"format": "pt"})
        wm.update(dict.fromkeys(names, fname))
    index = {
        "metadata": {"total_size": 0},
        "weight_map": weight_map if weight_map is not None else wm,
    }
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    return wm

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


FP8_MAX = 448.0  # largest finite float8_e4m3fn


def quantize_fp8_dir(model_dir: Path, *, block: int = 128, scale_dtype=torch.float32) -> None:
    """Rewrite a saved single-file model as Qwen publishes FP8 models: every 2-D
    ``*.weight`` except embeddings, lm_head and norms becomes ``float8_e4m3fn`` with a
    ``weight_scale_inv`` per ``block x block`` tile (amax / 448), and config.json gets a
    ``quantization_config``."""
    from safetensors.torch import load_file

    tensors = load_file(model_dir / "model.safetensors")
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        skip = ("embed", "lm_head", "norm")
        if t.ndim != 2 or not name.endswith(".weight") or any(s in name for s in skip):
            out[name] = t
            continue
        n, k = t.shape
        nb, kb = -(-n // block), -(-k // block)
        w = t.float()
        scale = torch.empty(nb, kb)
        q = torch.empty(n, k, dtype=torch.float8_e4m3fn)
        for i in range(nb):
            for j in range(kb):
                tile = w[i * block : (i + 1) * block, j * block : (j + 1) * block]
                s = max(float(tile.abs().max()) / FP8_MAX, 1e-12)
                scale[i, j] = s
                q[i * block : (i + 1) * block, j * block : (j + 1) * block] = (tile / s).to(
                    torch.float8_e4m3fn
                )
        out[name] = q
        out[name + "_scale_inv"] = scale.to(scale_dtype)
    save_file(out, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    cfg_path = model_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["quantization_config"] = {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [block, block],
    }
    cfg_path.write_text(json.dumps(cfg, indent=2))

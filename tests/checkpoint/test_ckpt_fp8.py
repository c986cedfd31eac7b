"""Block-quantized FP8 checkpoints (Qwen's published format) read dequantized."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from darwinmerge.checkpoint import CheckpointReader
from darwinmerge.errors import CheckpointError
from darwinmerge.merge import Recipe, merge_to_disk
from darwinmerge.zoo.tiny import make_parent_pair

from .ckpt_builders import quantize_fp8_dir

QC = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}


def _write(model_dir: Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    (model_dir / "config.json").write_text(json.dumps(config))
    return model_dir


def _hand_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A [256, 130] weight: 2 x 2 blocks of 128 (the last column block 2 wide)."""
    q = torch.zeros(256, 130)
    q[0, 0], q[0, 129], q[200, 5], q[255, 129], q[127, 127] = 1.0, -2.0, 0.5, 3.0, -0.25
    scale = torch.tensor([[0.5, 4.0], [3.0, 0.25]])
    return q.to(torch.float8_e4m3fn), scale


def test_dequantize_hand_computed_block(tmp_path):
    q, scale = _hand_pair()
    d = _write(
        tmp_path / "m",
        {"w.weight": q, "w.weight_scale_inv": scale, "norm.weight": torch.ones(4)},
        {"quantization_config": QC},
    )
    with CheckpointReader(d) as r:
        assert sorted(r.keys()) == ["norm.weight", "w.weight"]
        assert "w.weight_scale_inv" not in r and r.quantized
        assert r.dtype("w.weight") == torch.bfloat16 and r.nbytes("w.weight") == 256 * 130 * 2
        w = r.get("w.weight")
    assert w.dtype == torch.bfloat16 and w.shape == (256, 130)
    # W[i, j] = Q[i, j] * S[i // 128, j // 128], by hand
    assert w[0, 0].item() == 1.0 * 0.5
    assert w[0, 129].item() == -2.0 * 4.0
    assert w[127, 127].item() == -0.25 * 0.5
    assert w[200, 5].item() == 0.5 * 3.0
    assert w[255, 129].item() == 3.0 * 0.25
    assert int((w != 0).sum()) == 5


def test_fp8_slices_scales_and_dtype(tmp_path):
    g = torch.Generator().manual_seed(0)
    q = (torch.randn(3, 300, 200, generator=g) * 50).to(torch.float8_e4m3fn)  # fused experts
    s = torch.rand(3, 3, 2, generator=g) + 0.1
    d = _write(
        tmp_path / "m",
        {"experts.gate_up_proj": q, "experts.gate_up_proj_scale_inv": s.to(torch.bfloat16)},
        {"text_config": {"quantization_config": {**QC, "weight_block_size": [128, 128]}}},
    )
    s32 = s.to(torch.bfloat16).float()
    want = q.float() * s32.repeat_interleave(128, 1)[:, :300].repeat_interleave(128, 2)[:, :, :200]
    with CheckpointReader(d, dequantize_to=torch.float32) as r:
        assert r.dtype("experts.gate_up_proj") == torch.float32
        full = r.get("experts.gate_up_proj")
        assert torch.equal(full, want)
        assert torch.equal(r.get_slice("experts.gate_up_proj", 1), want[1])
        assert torch.equal(
            r.get_slice("experts.gate_up_proj", (2, slice(100, 260))), want[2, 100:260]
        )


def test_fp8_without_quantization_config_or_with_bad_scale_is_refused(tmp_path):
    q, scale = _hand_pair()
    d = _write(tmp_path / "a", {"w.weight": q, "w.weight_scale_inv": scale}, {})
    with pytest.raises(CheckpointError, match="quantization_config"):
        CheckpointReader(d)
    d = _write(
        tmp_path / "b",
        {"w.weight": q, "w.weight_scale_inv": scale[:1]},
        {"quantization_config": QC},
    )
    with pytest.raises(CheckpointError, match=r"w\.weight_scale_inv.*needs \[2, 2\]"):
        CheckpointReader(d)


@pytest.mark.parametrize("dtype", [None, "float32"])
def test_mixed_fp8_and_bf16_parents_merge(tmp_path, dtype):
    a, b = make_parent_pair(
        "qwen3_moe", tmp_path, dtype=torch.bfloat16, hidden_size=256, num_layers=2
    )
    name = "model.layers.1.self_attn.q_proj.weight"
    with CheckpointReader(a) as r:
        original = r.get(name).float()
    quantize_fp8_dir(a)
    recipe = Recipe.parse(
        {
            "parents": [{"name": "fp8", "path": str(a)}, {"name": "bf16", "path": str(b)}],
            "method": "linear",
            "parameters": {"weight": 0.5},
            **({"dtype": dtype} if dtype else {}),
        }
    )
    out = tmp_path / "child"
    merge_to_disk(recipe, out)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    want_dtype = torch.float32 if dtype else torch.bfloat16
    with (
        CheckpointReader(a, dequantize_to=want_dtype) as ra,
        CheckpointReader(b) as rb,
        CheckpointReader(out) as rc,
    ):
        assert not rc.quantized and all(rc.dtype(k) == want_dtype for k in rc.keys())
        assert not any(k.endswith("_scale_inv") for k in rc.keys())
        fa, fb = ra.get(name).float(), rb.get(name).float()
        got = rc.get(name).float()
        assert torch.allclose(
            got, 0.5 * fa + 0.5 * fb, rtol=1e-2, atol=1e-2 * float(fa.abs().max())
        )
        # and the dequantized FP8 parent is the original within e4m3's 3-bit mantissa
        assert ra.file_of(name).name == "model.safetensors"
        err = (fa - original).abs() / original.abs().clamp_min(1e-3 * float(original.abs().max()))
        assert float(err.max()) <= 2**-3 and not torch.equal(fa, original)

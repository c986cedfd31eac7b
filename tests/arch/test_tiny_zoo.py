"""The tiny model builders: determinism, load-back, layouts, fake MTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors import safe_open

from darwinmerge.errors import ConfigError
from darwinmerge.zoo.tiny import (
    FAMILIES,
    MTP_TENSOR_NAMES,
    add_fake_mtp,
    build_tiny_model,
    make_parent_pair,
    save_tiny,
    tiny_config,
)

IDS = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 4]])


def _keys(path: Path) -> list[str]:
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return list(f.keys())


@pytest.mark.parametrize("family", FAMILIES)
def test_build_is_deterministic_and_seed_dependent(family: str) -> None:
    a = build_tiny_model(family, seed=5).state_dict()
    b = build_tiny_model(family, seed=5).state_dict()
    c = build_tiny_model(family, seed=6).state_dict()
    assert a.keys() == b.keys() == c.keys()
    for name in a:
        assert a[name].dtype == torch.float32
        assert torch.equal(a[name], b[name]), name
        assert not torch.equal(a[name], c[name]), f"{name} does not depend on the seed"


def test_build_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model("llama", seed=9)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layout", ["per_expert", "fused"])
def test_save_and_load_back_same_weights_and_logits(
    family: str, layout: str, tmp_path: Path
) -> None:
    model = build_tiny_model(family, seed=2)
    path = save_tiny(model, tmp_path / "m", layout=layout)
    back = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    ref_sd, back_sd = model.state_dict(), back.state_dict()
    assert ref_sd.keys() == back_sd.keys()
    for name in ref_sd:
        assert torch.equal(ref_sd[name], back_sd[name]), name
    with torch.no_grad():
        torch.testing.assert_close(
            back(input_ids=IDS).logits, model(input_ids=IDS).logits, atol=1e-6, rtol=0
        )


@pytest.mark.parametrize(
    ("family", "layout", "expected"),
    [
        ("qwen3_moe", "per_expert", "model.layers.0.mlp.experts.3.up_proj.weight"),
        ("qwen3_moe", "fused", "model.layers.0.mlp.experts.gate_up_proj"),
        ("mixtral", "per_expert", "model.layers.0.block_sparse_moe.experts.3.w3.weight"),
        ("mixtral", "fused", "model.layers.0.mlp.experts.down_proj"),
        ("qwen3_5_moe", "fused", "model.layers.3.mlp.experts.gate_up_proj"),
    ],
)
def test_layout_names_on_disk(family: str, layout: str, expected: str, tmp_path: Path) -> None:
    keys = _keys(save_tiny(build_tiny_model(family), tmp_path / "m", layout=layout))
    assert expected in keys
    per_expert_keys = [k for k in keys if ".experts.0." in k]
    assert (len(per_expert_keys) > 0) == (layout == "per_expert")


def test_qwen3_5_text_layer_types_and_shapes(tmp_path: Path) -> None:
    config = tiny_config("qwen3_5_moe")
    assert config.model_type == "qwen3_5_moe_text"
    assert config.layer_types == ["linear_attention"] * 3 + ["full_attention"]
    path = save_tiny(build_tiny_model("qwen3_5_moe"), tmp_path / "m", layout="fused")
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert f.get_slice("model.layers.0.mlp.experts.gate_up_proj").get_shape() == [
            4,
            32,
            32,
        ]  # [E, 2I, H]
        assert f.get_slice("model.layers.0.mlp.experts.down_proj").get_shape() == [
            4,
            32,
            16,
        ]  # [E, H, I]
        keys = list(f.keys())
    assert "model.layers.0.linear_attn.in_proj_qkv.weight" in keys
    assert "model.layers.3.self_attn.q_proj.weight" in keys
    assert "model.layers.3.linear_attn.A_log" not in keys


def test_qwen3_5_multimodal_prefix_vision_and_text_load(tmp_path: Path) -> None:
    model = build_tiny_model("qwen3_5_moe", multimodal=True, seed=4)
    assert type(model).__name__ == "Qwen3_5MoeForConditionalGeneration"
    path = save_tiny(model, tmp_path / "mm", layout="fused")
    keys = _keys(path)
    assert "model.language_model.layers.0.mlp.experts.gate_up_proj" in keys
    assert any(k.startswith("model.visual.") for k in keys)
    assert not any(k.startswith("model.layers.") for k in keys)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "qwen3_5_moe"
    assert config["text_config"]["model_type"] == "qwen3_5_moe_text"
    # the text-only class reads the language model out of the multimodal checkpoint
    text = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            text(input_ids=IDS).logits, model(input_ids=IDS).logits, atol=1e-6, rtol=0
        )


def test_add_fake_mtp_adds_names_and_still_loads(tmp_path: Path) -> None:
    model = build_tiny_model("qwen3_5_moe", multimodal=True)
    path = save_tiny(model, tmp_path / "mm", layout="fused")
    before = set(_keys(path))
    add_fake_mtp(path, seed=1)
    added = set(_keys(path)) - before
    assert added == set(MTP_TENSOR_NAMES)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert f.get_slice("mtp.fc.weight").get_shape() == [32, 64]
        assert f.get_tensor("mtp.norm.weight").std() > 0
    assert (
        json.loads((path / "config.json").read_text())["text_config"]["mtp_num_hidden_layers"] == 1
    )
    back = transformers.Qwen3_5MoeForConditionalGeneration.from_pretrained(path).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            back(input_ids=IDS).logits, model(input_ids=IDS).logits, atol=1e-6, rtol=0
        )


def test_save_dtype_casts_copy_only(tmp_path: Path) -> None:
    model = build_tiny_model("qwen2", seed=1)
    path = save_tiny(model, tmp_path / "bf16", dtype=torch.bfloat16)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        emb = f.get_tensor("model.embed_tokens.weight")
    assert emb.dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32
    assert torch.equal(emb, model.model.embed_tokens.weight.detach().to(torch.bfloat16))


def test_make_parent_pair_differs_by_seed(tmp_path: Path) -> None:
    a, b = make_parent_pair(
        "qwen3_5_moe", tmp_path, layout_a="fused", multimodal_a=True, mtp_a=True, num_layers=4
    )
    keys_a, keys_b = _keys(a), _keys(b)
    assert "mtp.fc.weight" in keys_a and "mtp.fc.weight" not in keys_b
    assert "model.layers.0.mlp.experts.0.gate_proj.weight" in keys_b
    with (
        safe_open(str(a / "model.safetensors"), "pt") as fa,
        safe_open(str(b / "model.safetensors"), "pt") as fb,
    ):
        ea = fa.get_tensor("model.language_model.embed_tokens.weight")
        eb = fb.get_tensor("model.embed_tokens.weight")
    assert ea.shape == eb.shape and not torch.equal(ea, eb)


def test_bad_arguments_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gpt2"):
        tiny_config("gpt2")
    with pytest.raises(ConfigError, match="multimodal"):
        tiny_config("llama", multimodal=True)
    with pytest.raises(ConfigError, match="layout"):
        save_tiny(build_tiny_model("llama"), tmp_path / "x", layout="weird")

"""Layer stacking (mergekit ``slices`` over different layer ranges): the stacked child
equals mergekit's stacked tensors on a dense qwen3 pair, its config has the new layer
count and layer types and loads in transformers, and a Qwen3.5-MoE frankenmerge keeps
the 3:1 linear/full attention pattern or is refused in one line."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import torch

from darwinmerge.errors import ConfigError, MergeError
from darwinmerge.merge import Recipe, load_any_config, merge_to_disk, plan_merge
from darwinmerge.merge.api import open_sources
from darwinmerge.zoo.tiny import build_tiny_model, save_tiny

from .conftest import read_tensors, require_mergekit, run_mergekit


def _src(model: str, start: int, end: int, **parameters: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "layer_range": [start, end]}
    if parameters:
        out["parameters"] = parameters
    return out


# tiny qwen3 parents have 4 layers
CONFIGS: dict[str, dict[str, Any]] = {
    "frankenmerge": {  # layers 0-2 of a, then 1-3 of b: 6 layers
        "merge_method": "passthrough",
        "dtype": "float32",
        "slices": [{"sources": [_src("a", 0, 3)]}, {"sources": [_src("b", 1, 4)]}],
    },
    "depth_upscale_scaled": {  # one model twice, overlapping, one copy scaled: 7 layers
        "merge_method": "passthrough",
        "dtype": "float32",
        "slices": [
            {"sources": [_src("a", 0, 4)]},
            {
                "sources": [
                    _src("a", 1, 4, scale=[{"filter": "o_proj", "value": 0.0}, {"value": 1.0}])
                ]
            },
        ],
    },
    "shifted_linear": {  # each slice merges different layers of a and b: 4 layers
        "merge_method": "linear",
        "dtype": "float32",
        "slices": [
            {"sources": [_src("a", 0, 2, weight=0.3), _src("b", 2, 4, weight=0.7)]},
            {
                "sources": [_src("a", 2, 4, weight=[0.2, 0.8]), _src("b", 0, 2, weight=0.5)],
                "parameters": {"normalize": False},
            },
        ],
    },
}
LAYERS = {"frankenmerge": 6, "depth_upscale_scaled": 7, "shifted_linear": 4}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    require_mergekit()
    root = tmp_path_factory.mktemp("stack")
    for tag, seed in (("a", 0), ("b", 1)):
        save_tiny(build_tiny_model("qwen3", seed=seed), root / tag)
    run_mergekit(root, CONFIGS)
    return root


@pytest.mark.parametrize("name", list(CONFIGS))
def test_stacked_child_equals_mergekit_and_loads(runs: Path, name: str) -> None:
    recipe = load_any_config(runs / f"{name}.yaml")
    assert recipe.slices is not None and len(recipe.slices) == 2
    out = merge_to_disk(recipe, runs / f"dw-{name}").out_dir
    ours, theirs = read_tensors(out), read_tensors(runs / f"mk-{name}")
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-6, atol=1e-7, msg=key)
    n = LAYERS[name]
    assert {k for k in ours if f"layers.{n - 1}." in k} and not any(
        f"layers.{n}." in k for k in ours
    )
    # mergekit 0.1.5 stops at the config: it keeps the parents' 4 layer types
    error = (runs / f"mk-{name}.error").read_text() if (runs / f"mk-{name}.error").exists() else ""
    if n != 4:
        assert "layer_types" in error, error
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == n and len(config["layer_types"]) == n
    with ExitStack() as stack:  # the plan describes the child (`darwin validate` prints it)
        plan = plan_merge(recipe, open_sources(recipe, stack))
    assert plan.out_arch.num_layers == n and plan.out_arch.layer_types == config["layer_types"]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert model.config.num_hidden_layers == n and len(model.model.layers) == n
    ids = torch.tensor([[1, 5, 9, 17, 33]])
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_frankenmerge_layers_come_from_their_sources(runs: Path) -> None:
    """Output layer 3 of the frankenmerge is b's layer 1; embeddings are a's (the first
    slice), the final norm and lm_head b's (the last slice)."""
    out = read_tensors(runs / "dw-frankenmerge")
    a, b = read_tensors(runs / "a"), read_tensors(runs / "b")
    q = "model.layers.{}.self_attn.q_proj.weight"
    assert torch.equal(out[q.format(2)], a[q.format(2)])
    assert torch.equal(out[q.format(3)], b[q.format(1)])
    assert torch.equal(out[q.format(5)], b[q.format(3)])
    assert torch.equal(out["model.embed_tokens.weight"], a["model.embed_tokens.weight"])
    assert torch.equal(out["model.norm.weight"], b["model.norm.weight"])


@pytest.fixture(scope="module")
def moe_pair(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stack_moe")
    save_tiny(build_tiny_model("qwen3_5_moe", seed=0), root / "a", layout="fused")
    save_tiny(build_tiny_model("qwen3_5_moe", seed=1), root / "b", layout="fused")
    return root


def _moe_recipe(root: Path, ranges: list[tuple[str, int, int]]) -> Recipe:
    return Recipe.parse(
        {
            "parents": [
                {"name": "a", "path": str(root / "a")},
                {"name": "b", "path": str(root / "b")},
            ],
            "method": "passthrough",
            "slices": [{"sources": [{"parent": p, "layers": [s, e]}]} for p, s, e in ranges],
        }
    )


def test_qwen3_5_moe_frankenmerge_keeps_the_attention_pattern(
    moe_pair: Path, tmp_path: Path
) -> None:
    recipe = _moe_recipe(moe_pair, [("a", 0, 4), ("b", 0, 4), ("a", 0, 4)])
    out = merge_to_disk(recipe, tmp_path / "child").out_dir
    config = json.loads((out / "config.json").read_text())
    text = config.get("text_config", config)
    assert text["num_hidden_layers"] == 12
    assert text["layer_types"] == (["linear_attention"] * 3 + ["full_attention"]) * 3
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 5, 9, 17]])).logits).all()
    tensors, b = read_tensors(out), read_tensors(moe_pair / "b")
    experts = "model.layers.{}.mlp.experts.gate_up_proj"
    assert torch.equal(tensors[experts.format(6)], b[experts.format(2)])


def test_a_broken_attention_pattern_is_refused_in_one_line(moe_pair: Path, tmp_path: Path) -> None:
    recipe = _moe_recipe(moe_pair, [("a", 0, 3), ("b", 0, 4)])
    with pytest.raises(
        MergeError, match=r"output layer 3 would be linear_attention.*multiple of 4"
    ) as info:
        merge_to_disk(recipe, tmp_path / "child")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "child").exists()


def test_slice_recipes_are_checked_when_parsed() -> None:
    parents = [{"name": "a", "path": "/a"}, {"name": "b", "path": "/b"}]

    def parse(**fields: Any) -> Recipe:
        return Recipe.parse({"parents": parents, "method": "passthrough", **fields})

    with pytest.raises(ConfigError, match=r"slices\[0\]: every source must span the same"):
        parse(
            method="linear",
            parameters={"weight": 1.0},
            slices=[
                {"sources": [{"parent": "a", "layers": [0, 2]}, {"parent": "b", "layers": [0, 3]}]}
            ],
        )
    with pytest.raises(ConfigError, match=r"slices\[0\].sources\[0\].parent: 'c' is not a parent"):
        parse(slices=[{"sources": [{"parent": "c", "layers": [0, 2]}]}])
    with pytest.raises(ConfigError, match=r"passthrough merges exactly 1 sources, got 2"):
        parse(
            slices=[
                {"sources": [{"parent": "a", "layers": [0, 2]}, {"parent": "b", "layers": [0, 2]}]}
            ]
        )
    with pytest.raises(ConfigError, match="layer stacking with a base model is not supported"):
        parse(base="/base", slices=[{"sources": [{"parent": "a", "layers": [0, 2]}]}])
    with pytest.raises(ConfigError, match=r"layers must be \[start, end\)"):
        parse(slices=[{"sources": [{"parent": "a", "layers": [2, 2]}]}])
    ok = parse(
        slices=[
            {"sources": [{"parent": "a", "layers": [0, 2]}]},
            {"sources": [{"parent": "b", "layers": [1, 3]}]},
        ]
    )
    assert Recipe.from_yaml(ok.to_yaml()) == ok  # round-trips

"""In-memory merges into a resident model equal the streamed merge."""

import torch

from darwinmerge.merge import Recipe, StateDictSource, merge_into, merge_to_disk, plan_merge
from darwinmerge.zoo.tiny import build_tiny_model, save_tiny

from .conftest import logits_of


def test_merge_into_loaded_model_equals_disk_merge(tmp_path, ids):
    ma, mb = build_tiny_model("qwen3_5_moe", seed=0), build_tiny_model("qwen3_5_moe", seed=1)
    a, b = save_tiny(ma, tmp_path / "a"), save_tiny(mb, tmp_path / "b")
    recipe = Recipe.parse(
        {
            "parents": [{"name": "f", "path": str(a)}, {"name": "m", "path": str(b)}],
            "method": "slerp",
            "parameters": {"t": [{"component": "mlp", "value": [0.2, 0.9]}, {"value": 0.4}]},
            "router": [{"layers": [2, 2], "source": "m"}],
        }
    )
    merge_to_disk(recipe, tmp_path / "child")
    want = logits_of(tmp_path / "child", ids)

    # resident parents in the in-memory (fused) layout, merged straight into a third model
    sources = [StateDictSource.from_model(ma), StateDictSource.from_model(mb)]
    target = build_tiny_model("qwen3_5_moe", seed=9)
    plan = plan_merge(recipe, sources)
    assert plan.out_arch.expert_layout == "fused"
    merge_into(plan, sources, target)
    with torch.no_grad():
        got = target(ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    # the parents were not modified
    assert torch.equal(
        sources[0].get("model.layers.0.mlp.gate.weight"),
        ma.state_dict()["model.layers.0.mlp.gate.weight"],
    )

    # a second candidate into the same target reuses its storage (no reallocation)
    ptr = target.model.layers[0].mlp.experts.gate_up_proj.data_ptr()
    plan2 = plan_merge(
        recipe.model_copy(update={"parameters": {"t": 0.0}, "router": "merged"}), sources
    )
    merge_into(plan2, sources, target)
    assert target.model.layers[0].mlp.experts.gate_up_proj.data_ptr() == ptr
    with torch.no_grad():
        assert torch.allclose(target(ids).logits, ma(ids).logits, atol=1e-6)

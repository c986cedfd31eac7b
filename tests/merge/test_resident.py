"""write_into_model, matching vs assignment, and ResidentMerge (bit-identical to a fresh merge)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
import torch

from darwinmerge.checkpoint import CheckpointReader
from darwinmerge.errors import ArchitectureMismatchError, MergeError
from darwinmerge.merge import (
    Recipe,
    ResidentMerge,
    StateDictSource,
    assign,
    match_parents,
    merge_into,
    plan_merge,
    write_into_model,
)
from darwinmerge.zoo.tiny import build_tiny_model, save_tiny

# ------------------------------------------------------------------ write_into_model


def test_write_into_model_casts_reuses_storage_and_checks():
    model = build_tiny_model("llama", seed=0)
    state = model.state_dict()
    name = "model.layers.1.mlp.down_proj.weight"
    ptr = model.model.layers[1].mlp.down_proj.weight.data_ptr()
    value = torch.randn(state[name].shape, dtype=torch.float64)
    write_into_model(model, {name: value})
    got = model.model.layers[1].mlp.down_proj.weight
    assert got.dtype == torch.float32 and got.data_ptr() == ptr
    assert torch.equal(got, value.to(torch.float32))

    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(MergeError, match="not in the model, e.g. 'nope.weight'"):
        write_into_model(
            model, {"model.norm.weight": torch.zeros(32), "nope.weight": torch.ones(1)}
        )
    with pytest.raises(ArchitectureMismatchError, match="tensor 'model.norm.weight' has shape"):
        write_into_model(
            model,
            {"model.embed_tokens.weight": torch.zeros(128, 32), "model.norm.weight": torch.ones(7)},
        )
    with pytest.raises(MergeError, match="not given"):
        write_into_model(model, {"model.norm.weight": torch.zeros(32)}, strict=True)
    # a failed check writes nothing, not even the valid tensors given with it
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_write_into_model_tied_weights_are_one_tensor():
    model = build_tiny_model("llama", seed=0, tie_word_embeddings=True)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    emb = model.model.embed_tokens.weight.detach().clone()
    write_into_model(model, {"lm_head.weight": emb * 3})  # either name moves the pair
    assert torch.equal(model.model.embed_tokens.weight, emb * 3)
    write_into_model(model, {"model.embed_tokens.weight": emb, "lm_head.weight": emb.double()})
    assert torch.equal(model.lm_head.weight, emb)
    with pytest.raises(MergeError, match="are tied"):
        write_into_model(model, {"model.embed_tokens.weight": emb, "lm_head.weight": emb + 1})
    assert torch.equal(model.lm_head.weight, emb)
    # strict: one name of a tied pair stands for both
    full = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    write_into_model(model, full, strict=True)


# ------------------------------------------------------------------ ResidentMerge

_FAMILY = "qwen3_5_moe"


@pytest.fixture(scope="module")
def moe_parents(tmp_path_factory):
    """Father resident (fused, the in-memory layout), mother and base on disk per expert."""
    root = tmp_path_factory.mktemp("resident")
    father = build_tiny_model(_FAMILY, seed=0)
    mother = save_tiny(build_tiny_model(_FAMILY, seed=1), root / "mother", layout="per_expert")
    base = save_tiny(build_tiny_model(_FAMILY, seed=2), root / "base", layout="per_expert")
    with ExitStack() as stack:
        sources = [
            StateDictSource.from_model(father),
            stack.enter_context(CheckpointReader(mother)),
            stack.enter_context(CheckpointReader(base)),
        ]
        yield sources, root


def _recipe(method: str, **kw) -> Recipe:
    data = {
        "parents": [{"name": "father", "path": "/f"}, {"name": "mother", "path": "/m"}],
        "base": "/b",
        "method": method,
        **kw,
    }
    return Recipe.parse(data)


def _attention_layer(plan, layer):
    return {
        j.name
        for j in plan.jobs
        if j.role.layer == layer and j.role.component in ("attn", "linear_attn")
    }


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


SEQUENCES = {
    "slerp": [
        {"parameters": {"t": 0.5}},
        {"parameters": {"t": [{"component": "attention", "layers": [2, 2], "value": 0.8},
                              {"value": 0.5}]}},
        {"parameters": {"t": [{"component": "mlp", "value": [0.1, 0.9]}, {"value": 0.3}]},
         "router": [{"layers": [0, 1], "source": "mother"}]},
        {"parameters": {"t": 0.3}, "transplants": [{"layer": 1, "expert": 2, "source": "mother"}]},
    ],
    "ties": [
        {"parameters": {"weight": 0.5, "density": 0.5}},
        {"parameters": {"weight": 0.5, "density": [{"layers": [1, 1], "value": 0.3},
                                                   {"value": 0.5}]}},
        {"parameters": {"weight": 0.7, "density": 0.4, "normalize": False}},
    ],
    "dare_ties": [
        {"parameters": {"weight": 0.5, "density": 0.6}, "seed": 1},
        {"parameters": {"weight": 0.5, "density": 0.6}, "seed": 2},
        {"parameters": {"weight": [{"component": "experts", "value": 0.9}, {"value": 0.5}],
                        "density": 0.6}, "seed": 2,
         "transplants": [{"layer": 3, "expert": 0, "source": "father"}]},
    ],
}  # fmt: skip


@pytest.mark.parametrize("method", sorted(SEQUENCES))
def test_resident_child_equals_fresh_merge_bit_for_bit(moe_parents, method):
    sources, _ = moe_parents
    recipes = [_recipe(method, **kw) for kw in SEQUENCES[method]]
    matching = match_parents(recipes[0], sources)
    assert matching.out_arch.expert_layout == "fused"
    child = build_tiny_model(_FAMILY, seed=9)
    resident = ResidentMerge(child, sources, matching)
    previous = None
    for recipe in recipes:
        stats = resident.apply(recipe)
        plan = assign(recipe, matching)
        assert stats.merged + stats.skipped == len(plan.jobs)
        if previous is None:
            assert stats.merged == len(plan.jobs)
        previous = plan
    fresh = build_tiny_model(_FAMILY, seed=5)
    merge_into(plan_merge(recipes[-1], sources), sources, fresh)
    _assert_same(child.state_dict(), fresh.state_dict())
    # the same recipe again merges nothing
    again = resident.apply(recipes[-1])
    assert again.merged == 0 and again.skipped == len(previous.jobs)


def test_resident_stats_count_exactly_the_changed_tensors(moe_parents):
    sources, _ = moe_parents
    r1 = _recipe("slerp", parameters={"t": 0.5})
    matching = match_parents(r1, sources)
    child: dict[str, torch.Tensor] = {}
    resident = ResidentMerge(child, sources, matching)
    first = resident.apply(r1)
    n = len(assign(r1, matching).jobs)
    assert (first.merged, first.skipped) == (n, 0)

    # t of layer 2's attention only
    r2 = _recipe(
        "slerp",
        parameters={
            "t": [{"component": "attention", "layers": [2, 2], "value": 0.8}, {"value": 0.5}]
        },
    )
    want = _attention_layer(assign(r2, matching), 2)
    assert len(want) >= 4  # q, k, v, o (+ norms) of one layer
    before = {k: v.clone() for k, v in child.items()}
    stats = resident.apply(r2)
    assert (stats.merged, stats.skipped) == (len(want), n - len(want))
    changed = {k for k in child if not torch.equal(child[k], before[k])}
    assert changed <= want and len(changed) >= len(want) - 2  # norms may coincide at t

    # a seed change re-merges nothing for slerp (not random), everything random for dare
    assert resident.apply(r2.model_copy(update={"seed": 5})).merged == 0

    # one transplant: only that layer's experts and router change
    r3 = Recipe.parse(
        {
            **r2.model_dump(mode="json", exclude_defaults=True),
            "transplants": [{"layer": 1, "expert": 3, "source": "mother"}],
        }
    )
    stats = resident.apply(r3)
    plan = assign(r3, matching)
    moved = {
        j.name for j in plan.jobs if j.role.layer == 1 and j.role.component in ("experts", "router")
    }
    assert stats.merged == len(moved) and moved

    fresh = merge_into(plan, sources, {})
    _assert_same(child, dict(fresh))


def test_dare_seed_change_remerges_only_random_jobs(moe_parents):
    sources, _ = moe_parents
    r1 = _recipe("dare_ties", parameters={"weight": 0.5, "density": 0.5}, seed=0)
    matching = match_parents(r1, sources)
    resident = ResidentMerge({}, sources, matching)
    resident.apply(r1)
    stats = resident.apply(r1.model_copy(update={"seed": 1}))
    plan = assign(r1, matching)
    assert stats.merged == sum(j.action == "merge" for j in plan.jobs) > 0
    assert stats.skipped == sum(j.action == "copy" for j in plan.jobs)


def test_per_expert_donor_into_a_dict_equals_fresh_merge(moe_parents):
    sources, _ = moe_parents
    recipes = [
        _recipe("ties", parameters={"weight": 0.6, "density": 0.5}, donor="mother"),
        _recipe("slerp", parameters={"t": [0.2, 0.8]}, donor="mother", router="father"),
        _recipe("ties", parameters={"weight": 0.6, "density": 0.7}, donor="mother"),
    ]
    matching = match_parents(recipes[0], sources)
    assert matching.out_arch.expert_layout == "per_expert"
    child: dict[str, torch.Tensor] = {}
    resident = ResidentMerge(child, sources, matching)
    for r in recipes:
        resident.apply(r)
    fresh = merge_into(plan_merge(recipes[-1], sources), sources, {})
    _assert_same(child, dict(fresh))
    assert any(".experts.3.down_proj" in k for k in child)  # written per expert


def test_assign_refuses_a_recipe_the_matching_was_not_built_for(moe_parents):
    sources, _ = moe_parents
    matching = match_parents(_recipe("ties", parameters={"weight": 1.0}), sources)
    with pytest.raises(MergeError, match="donor 'mother' but matched for 'father'"):
        assign(_recipe("ties", parameters={"weight": 1.0}, donor="mother"), matching)
    names = match_parents(["father", "mother"], sources[:2])
    assert names.names == ["father", "mother"] and not names.has_base


def test_match_is_recipe_independent(moe_parents, tmp_path: Path):
    sources, _ = moe_parents
    a = match_parents(_recipe("slerp", parameters={"t": 0.1}), sources)
    b = match_parents(["father", "mother"], sources, base=True)
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    assert [t.fetches for t in a.tensors] == [t.fetches for t in b.tensors]


def test_a_model_in_another_layout_than_the_donor_is_refused_before_any_write(moe_parents):
    sources, _ = moe_parents
    recipe = _recipe("slerp", parameters={"t": 0.5}, donor="mother")  # per-expert names
    child = build_tiny_model(_FAMILY, seed=9)  # fused in memory
    before = {k: v.clone() for k, v in child.state_dict().items()}
    with pytest.raises(
        MergeError, match=r"resident model has no tensor model\.layers\.\d+\.mlp\.experts\.0\."
    ):
        ResidentMerge(child, sources, match_parents(recipe, sources)).apply(recipe)
    _assert_same(child.state_dict(), before)


def test_a_model_moved_after_construction_is_followed(moe_parents):
    sources, _ = moe_parents
    r1 = _recipe("slerp", parameters={"t": 0.5})
    child = build_tiny_model(_FAMILY, seed=9)
    resident = ResidentMerge(child, sources, match_parents(r1, sources))
    resident.apply(r1)
    child.to(torch.float64)  # new storage for every parameter
    stats = resident.apply(r1)
    assert stats.skipped == 0  # everything merged again, into the new storage
    fresh = build_tiny_model(_FAMILY, seed=5).to(torch.float64)
    merge_into(plan_merge(r1, sources), sources, fresh)
    _assert_same(child.state_dict(), fresh.state_dict())

"""apply_prescription: rules before the recipe's, t moved toward the right parent, only
at the flagged layer; densities, revivals, routers; an in-memory merge obeys it."""

import numpy as np
import pytest
import torch

from darwinmerge.errors import ConfigError
from darwinmerge.health import (
    MoveLayerT,
    Revive,
    ScaleDensity,
    SetRouter,
    apply_changes,
    apply_prescription,
    health_check,
    layer_t,
)
from darwinmerge.merge import Recipe, resolve_router, resolve_schedule

from .scans import MID, A, B, L, trio, zoo_like


def _ts(recipe: Recipe, component: str) -> list[float]:
    return [layer_t(recipe, layer, component, L) for layer in range(L)]  # type: ignore[misc]


def test_function_loss_moves_the_flagged_layer_toward_the_lost_parent():
    child = MID.copy()
    child[1, 3] = 0.05  # function loss at L3, parent A (0.35) is the important one
    v = health_check(*trio(child, A, B))
    recipe = zoo_like()
    fixed = apply_prescription(recipe, v)
    assert isinstance(fixed, Recipe)
    # mlp t 0.7 -> 0.35 at layer 3 only; attention t 0 stays at A
    assert _ts(fixed, "experts") == pytest.approx([0.7, 0.7, 0.7, 0.35], rel=1e-12)
    assert _ts(fixed, "router") == pytest.approx([0.7, 0.7, 0.7, 0.35], rel=1e-12)
    assert _ts(fixed, "attn") == [0.0, 0.0, 0.0, 0.0]
    # the new rules come first and name the layer; the old rules follow unchanged
    first = fixed.parents[1].parameters["weight"][0]
    assert first.layers == (3, 3)
    assert fixed.parents[1].parameters["weight"][-3:] == recipe.parents[1].parameters["weight"]
    # weights still sum to 1 at every layer and component
    for comp in ("experts", "attn", "norm"):
        for layer in range(L):
            wa = resolve_schedule(
                fixed.parents[0].parameters["weight"],
                layer=layer,
                component=comp,
                tensor_name="x",
                num_layers=L,
            )
            wb = resolve_schedule(
                fixed.parents[1].parameters["weight"],
                layer=layer,
                component=comp,
                tensor_name="x",
                num_layers=L,
            )
            assert wa + wb == pytest.approx(1.0, rel=1e-12)
    # the same prescription toward B moves attention off A instead
    toward_b = apply_changes(recipe, [MoveLayerT(3, "B", 0.5, "test")], L)
    assert _ts(toward_b, "attn") == pytest.approx([0, 0, 0, 0.5], abs=1e-12)
    assert _ts(toward_b, "experts") == pytest.approx([0.7, 0.7, 0.7, 0.85], rel=1e-12)


def test_a_scaled_layer_is_pulled_back_toward_the_parent():
    recipe = zoo_like()
    scaled = Recipe.parse(
        {
            **recipe.model_dump(mode="python"),
            "parents": [
                {
                    "name": "father",
                    "path": "/f",
                    "parameters": {"weight": [{"layers": [1, 1], "value": 0.2}, {"value": 1.0}]},
                },
                {
                    "name": "mother",
                    "path": "/m",
                    "parameters": {"weight": [{"layers": [1, 1], "value": 0.2}, {"value": 0.0}]},
                },
            ],
        }
    )
    moved = apply_changes(scaled, [MoveLayerT(1, "A", 0.5, "t")], L)
    where = dict(layer=1, component="attn", tensor_name="x", num_layers=L)
    wa = resolve_schedule(moved.parents[0].parameters["weight"], **where)
    wb = resolve_schedule(moved.parents[1].parameters["weight"], **where)
    assert (wa, wb) == pytest.approx((0.6, 0.1), rel=1e-12)  # (0.2,0.2) halfway to (1,0)


def test_slerp_t_schedule():
    recipe = Recipe.parse(
        {
            "method": "slerp",
            "parents": [{"name": "a", "path": "/a"}, {"name": "b", "path": "/b"}],
            "parameters": {"t": [0.2, 0.8]},
        }
    )
    out = apply_changes(recipe, [MoveLayerT(1, "B", 0.5, "t")], L)
    before = [0.2, 0.4, 0.6, 0.8]
    want = [0.2, 0.4 + 0.5 * 0.6, 0.6, 0.8]
    assert _ts(recipe, "attn") == pytest.approx(before, rel=1e-12)
    assert _ts(out, "attn") == pytest.approx(want, rel=1e-12)
    assert _ts(out, "experts") == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("method", ["trimmed_lerp", "slerp"])
def test_t_methods_of_the_genome_spaces_are_moved(method):
    """The evolve spaces write trimmed_lerp (a global t); a move must change its t."""
    recipe = Recipe.parse(
        {
            "method": method,
            "parents": [{"name": "a", "path": "/a"}, {"name": "b", "path": "/b"}],
            "parameters": {"t": [0.2, 0.8]},
        }
    )
    out = apply_changes(recipe, [MoveLayerT(1, "B", 0.5, "t")], L)
    assert out != recipe
    assert _ts(out, "attn") == pytest.approx([0.2, 0.4 + 0.5 * 0.6, 0.6, 0.8], rel=1e-12)


def test_density_scaled_for_sparsifying_methods_and_fallback_otherwise():
    recipe = Recipe.parse(
        {
            "method": "ties",
            "base": "/base",
            "parents": [
                {"name": "a", "path": "/a", "parameters": {"weight": 0.5, "density": 0.8}},
                {"name": "b", "path": "/b", "parameters": {"weight": 0.5, "density": 0.6}},
            ],
        }
    )
    out = apply_changes(recipe, [ScaleDensity(2, 0.7, "A", 0.5, "t")], L)
    for p, d in zip(out.parents, (0.8, 0.6), strict=True):
        got = [
            resolve_schedule(
                p.parameters["density"],
                layer=i,
                component="experts",
                tensor_name="x",
                num_layers=L,
            )
            for i in range(L)
        ]
        assert got == pytest.approx([d, d, d * 0.7, d], rel=1e-12)
    assert _ts(out, "experts") == _ts(recipe, "experts")
    # linear has no density: t moves toward the fallback parent instead
    lin = apply_changes(zoo_like(), [ScaleDensity(2, 0.7, "A", 0.5, "t")], L)
    assert _ts(lin, "experts") == pytest.approx([0.7, 0.7, 0.35, 0.7], rel=1e-12)


def test_revive_and_router_changes():
    recipe = Recipe.parse(
        {
            **zoo_like().model_dump(mode="python"),
            "transplants": [{"layer": 1, "expert": 2, "source": "mother"}],
            "router": [{"layers": [0, 0], "source": "father"}],
        }
    )
    out = apply_changes(
        recipe,
        [Revive(1, (2, 3), "A", "died"), SetRouter(2, "B", "entropy")],
        L,
    )
    assert {(t.layer, t.expert, t.source) for t in out.transplants} == {
        (1, 2, "father"),
        (1, 3, "father"),
    }
    assert [resolve_router(out, i) for i in range(L)] == ["father", "merged", "mother", "merged"]


def test_bad_changes_are_refused():
    with pytest.raises(ConfigError, match="layer outside 0..3"):
        apply_changes(zoo_like(), [MoveLayerT(7, "A", 0.5, "t")], L)
    three = Recipe.parse(
        {
            "method": "linear",
            "parents": [{"name": n, "path": f"/{n}", "parameters": {"weight": 1.0}} for n in "abc"],
        }
    )
    with pytest.raises(ConfigError, match="two-parent recipe"):
        apply_changes(three, [MoveLayerT(0, "A", 0.5, "t")], L)


def test_in_memory_merge_follows_the_prescription():
    from darwinmerge.merge import StateDictSource, merge_into, plan_merge
    from darwinmerge.zoo.tiny import build_tiny_model

    ma, mb = build_tiny_model("qwen3_5_moe", seed=0), build_tiny_model("qwen3_5_moe", seed=1)
    sources = [StateDictSource.from_model(ma), StateDictSource.from_model(mb)]
    recipe = Recipe.parse(
        {
            "method": "linear",
            "parents": [
                {"name": "a", "path": "/a", "parameters": {"weight": 0.5}},
                {"name": "b", "path": "/b", "parameters": {"weight": 0.5}},
            ],
            "parameters": {"normalize": False},
        }
    )
    n = ma.config.num_hidden_layers
    fixed = apply_changes(recipe, [MoveLayerT(1, "A", 0.5, "function loss")], n)
    out = merge_into(plan_merge(fixed, sources), sources)
    sa, sb = ma.state_dict(), mb.state_dict()
    checked = 0
    for name in sa:
        if ".layers." not in name or name not in out:
            continue
        layer = int(name.split(".layers.")[1].split(".")[0])
        wa = 0.75 if layer == 1 else 0.5
        want = wa * sa[name] + (1 - wa) * sb[name]
        torch.testing.assert_close(out[name], want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))
        checked += 1
    assert checked > 10
    assert np.isclose(layer_t(fixed, 1, "experts", n), 0.25)

"""The seed space: the published Darwin V5 recipe is expressible and decodes as documented."""

from __future__ import annotations

import pytest

from darwinmerge.errors import ConfigError
from darwinmerge.evolve import SpaceContext, build_space, parse_space_config
from darwinmerge.merge.recipe import resolve_router, resolve_schedule

L = 40
V5 = {
    "ratio": 0.8,
    "attn": 0.32,
    "ffn": 0.59,
    "density_a": 0.799,
    "density_b": 0.799,
    "cut_1": 38,
    "cut_2": 39,
    "t_1": 0.5988,
    "t_2": 0.9,
    "t_3": 0.5336,
    "router_1": "mother",
    "router_2": "mother",
    "router_3": "father",
    "revive": 0.05,
}


def _ctx(**kw: object) -> SpaceContext:
    args: dict[str, object] = dict(
        parent_names=("father", "mother"),
        parent_paths=("/zoo/father", "/zoo/mother"),
        num_layers=L,
        sparse_layers=tuple(range(L)),
        num_experts=256,
        scans={"mother": "/mri/scan_b.json", "father": "/mri/scan_a.json"},
    )
    args.update(kw)
    return SpaceContext(**args)  # type: ignore[arg-type]


def _t(recipe, layer: int | None, component: str) -> float:  # type: ignore[no-untyped-def]
    value = resolve_schedule(
        recipe.parameters["t"],
        layer=layer,
        component=component,
        tensor_name=f"model.layers.{layer}.x",
        num_layers=L,
    )
    assert value is not None
    return value


def test_v5_recipe_decodes_as_the_post_describes() -> None:
    space = build_space(parse_space_config({"kind": "seed", "max_blocks": 3}), _ctx())
    x = space.encode(V5)
    for name, value in space.values(x).items():
        if isinstance(value, str):
            assert value == V5[name]
        else:
            assert value == pytest.approx(V5[name], abs=1e-12)
    recipe = space.decode(x)
    assert recipe.method == "trimmed_lerp"
    assert [p.parameters["density"] for p in recipe.parents] == [0.799, 0.799]
    # block t per layer; components offset by (gene - 1/2), clipped to [0, 1]
    for layers, t in (((0, 10, 37), 0.5988), ((38,), 0.9), ((39,), 0.5336)):
        for layer in layers:
            assert _t(recipe, layer, "norm") == pytest.approx(t)
            for comp in ("attn", "linear_attn"):
                assert _t(recipe, layer, comp) == pytest.approx(t + 0.32 - 0.5)
            for comp in ("experts", "shared_expert", "shared_expert_gate", "router"):
                assert _t(recipe, layer, comp) == pytest.approx(min(1.0, t + 0.59 - 0.5))
    assert _t(recipe, 38, "experts") == pytest.approx(0.99)  # "transplanted nearly in full"
    for comp in ("embed", "lm_head", "final_norm"):
        assert _t(recipe, None, comp) == pytest.approx(0.8)
    # router B -> B -> A
    assert [resolve_router(recipe, layer) for layer in (0, 37, 38, 39)] == [
        "mother",
        "mother",
        "mother",
        "father",
    ]
    assert recipe.revive is not None
    assert (recipe.revive.source, recipe.revive.into) == ("father", "mother")
    assert recipe.revive.threshold == pytest.approx(0.05)
    assert recipe.revive.scan == "/mri/scan_b.json"
    assert recipe.revive.donor_scan == "/mri/scan_a.json"
    assert space.describe(x)["blocks"] == (
        "L0-37 t=0.5988 router mother; L38 t=0.9000 router mother; L39 t=0.5336 router father"
    )


def test_clipping_and_cut_order() -> None:
    space = build_space(parse_space_config({"kind": "seed"}), _ctx())
    vals = {**V5, "attn": 0.0, "ffn": 1.0, "t_1": 0.2, "t_2": 0.95, "cut_1": 30, "cut_2": 10}
    recipe = space.decode(space.encode(vals))
    assert _t(recipe, 5, "attn") == 0.0  # 0.2 + 0 - 0.5 clipped
    assert _t(recipe, 5, "experts") == pytest.approx(0.7)
    # cuts are sorted: blocks L0-9 (t_1), L10-29 (t_2), L30-39 (t_3)
    assert _t(recipe, 9, "norm") == pytest.approx(0.2)
    assert _t(recipe, 10, "norm") == pytest.approx(0.95)
    assert _t(recipe, 29, "experts") == 1.0  # 0.95 + 0.5 clipped
    assert _t(recipe, 30, "norm") == pytest.approx(0.5336)
    # coinciding cuts and cuts at the ends leave empty blocks out
    one = space.decode(space.encode({**V5, "cut_1": 0, "cut_2": L}))
    assert space.describe(space.encode({**V5, "cut_1": 0, "cut_2": L}))["blocks"].startswith(
        "L0-39 t=0.9000"
    )
    assert _t(one, 0, "norm") == pytest.approx(0.9)


def test_revival_gene_and_zero_threshold() -> None:
    space = build_space(parse_space_config({"kind": "seed"}), _ctx())
    assert space.decode(space.encode({**V5, "revive": 0.0})).revive is None
    no_scan = build_space(parse_space_config({"kind": "seed"}), _ctx(scans={}))
    assert "revive" not in no_scan.gene_names
    assert no_scan.decode([0.5] * no_scan.dim).revive is None
    with pytest.raises(ConfigError, match="revive: on needs a saved MRI scan of mother"):
        build_space(parse_space_config({"kind": "seed", "revive": "on"}), _ctx(scans={}))
    off = build_space(parse_space_config({"kind": "seed", "revive": "off"}), _ctx())
    assert "revive" not in off.gene_names


def test_seed_space_needs_two_parents_and_a_base_for_use_base() -> None:
    three = _ctx(parent_names=("a", "b", "c"), parent_paths=("/a", "/b", "/c"), scans={})
    with pytest.raises(ConfigError, match="exactly two parents"):
        build_space(parse_space_config({"kind": "seed"}), three)
    with pytest.raises(ConfigError, match="use_base needs a base"):
        build_space(parse_space_config({"kind": "seed", "use_base": True}), _ctx())
    based = build_space(
        parse_space_config({"kind": "seed", "use_base": True}), _ctx(base_path="/zoo/base")
    )
    recipe = based.decode([0.5] * based.dim)
    assert recipe.method == "trimmed_task_lerp" and recipe.base == "/zoo/base"

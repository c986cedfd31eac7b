"""Codec of every genome space: corners and random genomes decode to recipes that merge,
encode inverts decode, and each space's formulas hold on the resolved schedules."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from darwinmerge.errors import ConfigError
from darwinmerge.evolve import (
    Gene,
    SpaceContext,
    blind_prior,
    build_space,
    parse_space_config,
)
from darwinmerge.merge import merge_to_disk
from darwinmerge.merge.recipe import resolve_schedule
from darwinmerge.zoo.tiny import build_tiny_model, make_parent_pair, save_tiny

L = 4
SPACE_CONFIGS: list[dict[str, Any]] = [
    {"kind": "seed"},
    {"kind": "seed", "max_blocks": 1, "use_base": True, "density_low": 0.2},
    {"kind": "layerwise"},
    {"kind": "layerwise", "control_points": 2, "densities": True, "use_base": True},
    {"kind": "mergekit_evolve", "merge_method": "linear", "layer_granularity": 2,
     "filters": ["self_attn", "mlp.experts"]},
    {"kind": "mergekit_evolve", "merge_method": "ties", "smooth": True, "layer_granularity": 1},
    {"kind": "mergekit_evolve", "merge_method": "dare_ties", "layer_granularity": 2},
    {"kind": "mergekit_evolve", "merge_method": "task_arithmetic",
     "allow_negative_weights": True, "normalize": False},
    {"kind": "mergekit_evolve", "merge_method": "slerp", "layer_granularity": 1},
]  # fmt: skip


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> SpaceContext:
    root = tmp_path_factory.mktemp("parents")
    a, b = make_parent_pair("qwen3_5_moe", root, num_layers=L, num_experts=4)
    base = save_tiny(build_tiny_model("qwen3_5_moe", seed=2, num_layers=L, num_experts=4),
                     root / "base")  # fmt: skip
    return SpaceContext.from_parents(
        {"father": a, "mother": b}, base=base, scans={"mother": {1: [0, 2]}, "father": {1: [2]}}
    )


def _merged(recipe: Any, out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    merge_to_disk(recipe, out)
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    return tensors


@pytest.mark.parametrize("cfg", SPACE_CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_corners_and_random_genomes_merge(
    cfg: dict[str, Any], ctx: SpaceContext, tmp_path: Path
) -> None:
    space = build_space(parse_space_config(cfg), ctx)
    rng = np.random.default_rng(0)
    genomes = {
        "zero": np.zeros(space.dim),
        "one": np.ones(space.dim),
        "rand": rng.random(space.dim),
    }
    for tag, x in genomes.items():
        recipe = space.decode(x)  # validated at parse time
        tensors = _merged(recipe, tmp_path / tag)
        assert tensors and all(torch.isfinite(t).all() for t in tensors.values()), tag
        for gene, value in space.values(x).items():
            g = space.genes[space.gene_names.index(gene)]
            if g.kind == "choice":
                assert value in g.choices
            else:
                assert g.low <= float(value) <= g.high
    # out-of-box samples decode to the edge, wrong lengths and NaN are refused
    assert space.decode(np.full(space.dim, 2.0)) == space.decode(np.ones(space.dim))
    with pytest.raises(ConfigError, match="genes"):
        space.decode(np.zeros(space.dim + 1))
    with pytest.raises(ConfigError, match="NaN"):
        space.decode(np.full(space.dim, np.nan))


@pytest.mark.parametrize("cfg", SPACE_CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_encode_inverts_decode(cfg: dict[str, Any], ctx: SpaceContext) -> None:
    space = build_space(parse_space_config(cfg), ctx)
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = rng.random(space.dim)
        values = space.values(x)
        again = space.encode(values)
        for name, v in space.values(again).items():
            if isinstance(v, str) or space.genes[space.gene_names.index(name)].kind == "int":
                assert v == values[name]
            else:
                assert v == pytest.approx(values[name], rel=1e-12, abs=1e-12)
        real = [i for i, g in enumerate(space.genes) if g.kind == "real"]
        np.testing.assert_allclose(again[real], x[real], rtol=1e-12, atol=1e-12)
        assert space.decode(again) == space.decode(x)
    prior = blind_prior(space)
    assert prior.mean.shape == (space.dim,) and (prior.sigma == 1 / 6).all()


def test_gene_maps() -> None:
    g = Gene("c", 0, 10, "int")
    assert [g.value(u) for u in (0.0, 0.04, 0.05, 0.5, 1.0)] == [0, 0, 1, 5, 10]
    assert g.value(g.unit(7)) == 7
    ch = Gene("r", kind="choice", choices=("a", "merged", "b"))
    assert [ch.value(u) for u in (0.0, 0.33, 0.34, 0.66, 0.67, 1.0)] == [
        "a", "a", "merged", "merged", "b", "b",
    ]  # fmt: skip
    assert ch.unit("b") == pytest.approx(5 / 6)
    with pytest.raises(ConfigError, match="outside"):
        Gene("x", 0.5, 1.0).unit(0.2)


def _t(recipe: Any, layer: int | None, component: str) -> float:
    v = resolve_schedule(
        recipe.parameters["t"], layer=layer, component=component, tensor_name="x", num_layers=L
    )
    assert v is not None
    return v


def test_layerwise_control_points_interpolate(ctx: SpaceContext) -> None:
    space = build_space(parse_space_config({"kind": "layerwise", "control_points": 2}), ctx)
    vals = {n: 0.5 for n in space.gene_names}
    vals.update({"experts_0": 0.1, "experts_1": 0.7, "attention_0": 0.9, "attention_1": 0.0,
                 "non_layer": 0.05})  # fmt: skip
    recipe = space.decode(space.encode(vals))
    for layer in range(L):
        pos = layer / (L - 1)
        assert _t(recipe, layer, "experts") == pytest.approx(0.1 + pos * 0.6)
        assert _t(recipe, layer, "linear_attn") == pytest.approx(0.9 - pos * 0.9)
        assert _t(recipe, layer, "norm") == pytest.approx(0.5)
    assert _t(recipe, None, "lm_head") == pytest.approx(0.05)
    full = build_space(parse_space_config({"kind": "layerwise"}), ctx)
    per_layer = {n: 0.5 for n in full.gene_names}
    per_layer.update({f"router_{i}": 0.1 * (i + 1) for i in range(L)})
    r = full.decode(full.encode(per_layer))
    assert [_t(r, i, "router") for i in range(L)] == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_mergekit_genotype_layout_and_slerp(ctx: SpaceContext) -> None:
    cfg = {"kind": "mergekit_evolve", "merge_method": "ties", "layer_granularity": 2,
           "filters": ["self_attn"]}  # fmt: skip
    space = build_space(parse_space_config(cfg), ctx)
    # [groups 2, models 2, sets 2, params 2], C order, as mergekit-evolve flattens it
    assert space.dim == 16
    assert space.gene_names[:4] == [
        "father.weight[self_attn]@0", "father.density[self_attn]@0",
        "father.weight@0", "father.density@0",
    ]  # fmt: skip
    x = np.arange(16) / 15
    arr = space.genotype(space.values(x))
    assert arr.shape == (2, 2, 2, 2)
    u = x[(1 * 2 + 0) * 4 + 1 * 2 + 0]  # group 1, father, default set, weight
    assert arr[1, 0, 1, 0] == pytest.approx(1e-3 + u * (1 - 1e-3))  # ties normalizes: floor
    recipe = space.decode(x)
    assert recipe.method == "ties" and recipe.base == ctx.base_path
    assert [p.name for p in recipe.parents] == ["father", "mother"]
    slerp = build_space(
        parse_space_config({"kind": "mergekit_evolve", "merge_method": "slerp",
                            "layer_granularity": 1}), ctx)  # fmt: skip
    vals = {n: 0.0 for n in slerp.gene_names}
    vals.update({"father.t@2": 0.9, "mother.t@2": 0.2, "mother.t@3": 1.0})
    r = slerp.decode(slerp.encode(vals))
    assert _t(r, 2, "experts") == pytest.approx(1 / (1 + math.exp(0.7)))  # sigmoid(wB - wA)
    assert _t(r, 3, "experts") == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert _t(r, 0, "attn") == pytest.approx(0.5)


def test_mergekit_config_errors(ctx: SpaceContext) -> None:
    bad = [
        ({"merge_method": "slerp", "smooth": True}, "slerp supports neither"),
        ({"merge_method": "linear", "allow_negative_weights": True}, "normalize: false"),
        ({"merge_method": "linear", "base_model": "x"}, "linear takes no base_model"),
    ]
    for extra, msg in bad:
        with pytest.raises(ValueError, match=msg):
            parse_space_config({"kind": "mergekit_evolve", **extra})
    with pytest.raises(ConfigError, match="multiple of layer_granularity=3"):
        build_space(parse_space_config({"kind": "mergekit_evolve", "layer_granularity": 3}), ctx)
    with pytest.raises(ConfigError, match="must name every parent"):
        build_space(parse_space_config({"kind": "mergekit_evolve", "models": ["father"]}), ctx)
    with pytest.raises(ValueError, match="extra"):
        parse_space_config({"kind": "seed", "blocks": 3})
    with pytest.raises(ValueError, match="tag"):
        parse_space_config({"kind": "nope"})


def test_density_genes_change_the_child(ctx: SpaceContext, tmp_path: Path) -> None:
    space = build_space(parse_space_config({"kind": "seed", "revive": "off"}), ctx)
    vals = space.values(np.full(space.dim, 0.5))
    dense = _merged(space.decode(space.encode({**vals, "density_b": 1.0})), tmp_path / "d1")
    sparse = _merged(space.decode(space.encode({**vals, "density_b": 0.6})), tmp_path / "d06")
    changed = [k for k in dense if not torch.equal(dense[k], sparse[k])]
    assert any("experts" in k for k in changed) and any("self_attn" in k for k in changed)

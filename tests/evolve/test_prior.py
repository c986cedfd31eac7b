"""The MRI prior on hand-made scans: every rule, with numbers worked out by hand."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from darwinmerge.errors import ConfigError
from darwinmerge.evolve import (
    SpaceContext,
    blind_prior,
    build_space,
    mri_prior,
    parse_space_config,
    scan_evidence,
)
from darwinmerge.evolve.prior import KAPPA, SIGMA_BLIND, SIGMA_MIN
from darwinmerge.evolve.prior_rules import segments
from darwinmerge.mri import Scan, SwapResult, compare_scans

L, CATS = 6, ["REASONING", "CODE"]
LOSS_A, LOSS_B = np.array([0.5, 0.2]), np.array([0.3, 0.6])
# loss change of A with B's layer l (swap_ab) and of B with A's layer l (swap_ba)
AB = np.array([[0.01, 0.01, 0.02, -0.05, -0.1, 0.02], [0.02, 0.02, -0.04, -0.01, 0.0, 0.08]])
BA = -AB.copy()
BA[1, 5] = -0.16


def _scan(name: str, loss: np.ndarray, **given: Any) -> Scan:
    """A Scan with the given fields; every other field neutral (robust to new fields)."""
    neutral = {"np.ndarray": np.zeros(1), "str": "", "int": 0, "float": 0.0}
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Scan):
        ann = str(f.type)
        values[f.name] = neutral.get(ann, [] if ann.startswith("list") else {})
    values.update(
        model=name,
        categories=list(CATS),
        num_layers=L,
        bi=np.zeros((2, L)),
        loss=loss,
        sparse_layers=list(range(L)),
        num_experts=4,
        top_k=2,
        dead_threshold=0.05,
    )
    if "loss_tokens" in values:  # scans and swap results must count the same tokens
        values["loss_tokens"] = "completion"
    values.update(given)
    return Scan(**values)


def _scans() -> tuple[Any, Scan, Scan]:
    util_b = np.ones((L, 4))
    util_b[[0, 1, 2, 5], :2] = 0.0  # half of B's experts dead outside L3-L4
    a = _scan(
        "a",
        LOSS_A,
        router_entropy=np.full(L, 0.9),
        dead_fraction=np.zeros(L),
        utilisation=np.ones((L, 4)),
    )
    b = _scan(
        "b",
        LOSS_B,
        router_entropy=np.full(L, 0.95),
        dead_fraction=np.array([0.5, 0.5, 0.5, 0.0, 0.0, 0.5]),
        utilisation=util_b,
    )
    comp = compare_scans(
        a, b, SwapResult(LOSS_A, LOSS_A[:, None] + AB), SwapResult(LOSS_B, LOSS_B[:, None] + BA)
    )
    return comp, a, b


def _ctx() -> SpaceContext:
    return SpaceContext(
        parent_names=("father", "mother"),
        parent_paths=("/f", "/m"),
        num_layers=L,
        sparse_layers=tuple(range(L)),
        num_experts=4,
        scans={"mother": {0: [0, 1]}},
    )


def _t(z: float) -> float:
    return 1 / (1 + math.exp(KAPPA * z))


def test_segments_by_sign_golden_and_merging() -> None:
    z = np.array([0.1, 0.2, -0.3, -0.1, -0.4, 0.5])
    assert segments(z, None, 6) == [[0, 1], [2, 3, 4], [5]]
    assert segments(z, 3, 6) == [[0, 1], [2], [3], [4], [5]]
    # too many: the weakest non-golden block ([0, 1], |sum| 0.3, first of the ties) joins
    # its only non-golden neighbour [2]; the golden layer stays alone
    assert segments(z, 3, 4) == [[0, 1, 2], [3], [4], [5]]
    # a same-sign neighbour is preferred: [4] (|sum| 0.4) joins [2, 3] (same sign)
    assert segments(z, None, 2) == [[0, 1, 2, 3, 4], [5]]
    assert segments(z, None, 1) == [list(range(L))]
    assert segments(np.array([0.1, 0.0, 0.2]), None, 3) == [[0, 1, 2]]  # 0 joins


def test_evidence_numbers() -> None:
    comp, a, b = _scans()
    ev = scan_evidence(comp, a, b)
    # z = swap advantage / |loss gap| per category, averaged over categories
    z_r = np.array([0.01, 0.01, 0.02, -0.05, -0.1, 0.02]) / 0.2
    z_c = np.array([0.02, 0.02, -0.04, -0.01, 0.0, 0.12]) / 0.4
    np.testing.assert_allclose(ev.layer_z, (z_r + z_c) / 2, rtol=1e-12, atol=1e-15)
    # the two categories disagree at L2 (conf 0) and agree everywhere else (conf 1)
    np.testing.assert_allclose(ev.layer_conf, [1, 1, 0, 1, 1, 1], atol=1e-12)
    # golden: B's peak layer on her specialty; without a target its evidence is the mean
    # over the categories (L4: reasoning -0.5, code 0.0) and its confidence theirs
    assert ev.specialty == "REASONING" and ev.golden == 4
    assert ev.golden_z == pytest.approx(ev.layer_z[4]) == pytest.approx(-0.25)
    assert ev.golden_conf == pytest.approx(ev.layer_conf[4])
    nl_r = (-0.2 - (-0.09)) / 0.2
    nl_c = (0.4 - 0.11) / 0.4
    assert ev.non_layer_z == pytest.approx((nl_r + nl_c) / 2)
    assert ev.non_layer_conf == pytest.approx(abs(nl_r + nl_c) / (abs(nl_r) + abs(nl_c)))
    assert ev.density_b == pytest.approx(1 - 2 / 6) and ev.density_a == 1.0
    assert ev.revivable == 8
    only = scan_evidence(comp, a, b, target="reasoning")
    np.testing.assert_allclose(only.layer_z, z_r)
    assert only.golden == 4 and only.golden_z == pytest.approx(-0.5)  # the target alone
    with pytest.raises(ConfigError, match="not a probe category"):
        scan_evidence(comp, a, b, target="poetry")


def test_seed_prior_blocks_t_router_density_revival() -> None:
    comp, a, b = _scans()
    space = build_space(parse_space_config({"kind": "seed", "max_blocks": 4}), _ctx())
    prior = mri_prior(space, comp, a, b)
    vals = space.values(prior.mean)
    z = scan_evidence(comp, a, b).layer_z
    assert [vals["cut_1"], vals["cut_2"], vals["cut_3"]] == [3, 4, 5]
    assert vals["t_1"] == pytest.approx(_t(z[:3].mean()))
    assert vals["t_2"] == pytest.approx(_t(z[3]))
    # golden (no target): B's peak layer on her specialty, its t weighed over every category
    assert vals["t_3"] == pytest.approx(_t(z[4]))
    assert vals["t_4"] == pytest.approx(_t(z[5]))
    assert vals["t_3"] > vals["t_2"] > 0.5 > vals["t_1"] > vals["t_4"]
    # with a target, the target's evidence alone sets the golden layer's t
    aimed = space.values(mri_prior(space, comp, a, b, target="reasoning").mean)
    assert aimed["t_3"] == pytest.approx(_t(-0.5))
    # router: A healthier (B half dead) + A wins -> A; B healthier + wins -> B
    assert [vals[f"router_{k}"] for k in range(1, 5)] == ["father", "mother", "mother", "father"]
    assert vals["density_a"] == 1.0 and vals["density_b"] == pytest.approx(2 / 3)
    assert vals["revive"] == pytest.approx(0.05)
    assert vals["ratio"] == pytest.approx(_t(scan_evidence(comp, a, b).non_layer_z))
    assert vals["attn"] == 0.5 and vals["ffn"] == 0.5
    names = space.gene_names
    # confident genes: small steps and a narrowed box; unknown ones: blind step, full box
    i_t2, i_attn = names.index("t_2"), names.index("attn")
    assert prior.sigma[i_t2] == pytest.approx(SIGMA_MIN)
    assert prior.sigma[i_attn] == pytest.approx(SIGMA_BLIND)
    assert prior.upper[i_t2] - prior.lower[i_t2] < 0.5
    assert (prior.lower[i_attn], prior.upper[i_attn]) == (0.0, 1.0)
    # block L0-2 holds the ambiguous L2: a larger step than the unanimous blocks
    assert prior.sigma[names.index("t_1")] > prior.sigma[i_t2]
    # a cut's box allows one layer either way
    i_cut = names.index("cut_2")
    assert space.genes[i_cut].value(prior.lower[i_cut]) == 3
    assert space.genes[i_cut].value(prior.upper[i_cut]) == 5
    assert all(prior.reasons) and len(prior.reasons) == space.dim
    assert space.decode(prior.mean).revive is not None


def test_unused_blocks_are_pinned_and_revival_off_without_dead_experts() -> None:
    comp, a, b = _scans()
    healthy = dataclasses.replace(b, utilisation=np.ones((L, 4)))
    space = build_space(parse_space_config({"kind": "seed", "max_blocks": 6}), _ctx())
    prior = mri_prior(space, comp, a, healthy)
    vals = space.values(prior.mean)
    assert vals["cut_4"] == L and vals["cut_5"] == L
    i = space.gene_names.index("cut_5")
    assert space.genes[i].value(prior.lower[i]) == L  # pinned: every sample keeps it at L
    assert vals["revive"] == 0.0 and space.decode(prior.mean).revive is None


def test_layerwise_and_mergekit_priors() -> None:
    comp, a, b = _scans()
    ev = scan_evidence(comp, a, b)
    lw = build_space(parse_space_config({"kind": "layerwise"}), _ctx())
    prior = mri_prior(lw, comp, a, b)
    vals = lw.values(prior.mean)
    for layer in range(L):
        assert vals[f"experts_{layer}"] == pytest.approx(_t(ev.layer_z[layer]))
    assert vals["non_layer"] == pytest.approx(_t(ev.non_layer_z))
    two = build_space(parse_space_config({"kind": "layerwise", "control_points": 2}), _ctx())
    v2 = two.values(mri_prior(two, comp, a, b).mean)
    assert v2["attention_1"] == pytest.approx(_t(ev.layer_z[-1]))
    mk = build_space(
        parse_space_config(
            {"kind": "mergekit_evolve", "merge_method": "linear", "layer_granularity": 3}
        ),
        _ctx(),
    )
    mv = mk.values(mri_prior(mk, comp, a, b).mean)
    # group 0 (L0-2) reads the layer curve at its centre, L1; weights A: 1 - t, B: t
    assert mv["mother.weight@0"] == pytest.approx(_t(ev.layer_z[1]))
    assert mv["father.weight@0"] + mv["mother.weight@0"] == pytest.approx(1.0)


def test_blind_prior_and_bad_scans() -> None:
    space = build_space(parse_space_config({"kind": "seed"}), _ctx())
    prior = blind_prior(space)
    assert (prior.mean == 0.5).all() and (prior.sigma == 1 / 6).all()
    assert (prior.lower == 0).all() and (prior.upper == 1).all()
    mk = build_space(
        parse_space_config({"kind": "mergekit_evolve", "merge_method": "ties"}),
        dataclasses.replace(_ctx(), base_path="/base"),
    )
    vals = mk.values(blind_prior(mk).mean)  # mergekit-evolve's x0: weight 1/n, density 1
    assert vals["father.weight@0"] == pytest.approx(0.5) and vals["mother.density@0"] == 1.0
    comp, a, b = _scans()
    no_swap = compare_scans(a, b)
    with pytest.raises(ConfigError, match="no swap scan"):
        mri_prior(space, no_swap, a, b)
    with pytest.raises(ConfigError, match="layers"):
        mri_prior(
            build_space(
                parse_space_config({"kind": "seed"}), dataclasses.replace(_ctx(), num_layers=8)
            ),
            comp,
            a,
            b,
        )


def test_scans_in_the_other_parent_order_are_refused() -> None:
    comp, a, b = _scans()
    swapped = dataclasses.replace(comp, model_a="/data/m", model_b="/data/f")
    space = build_space(parse_space_config({"kind": "seed"}), _ctx())  # A = /f, B = /m
    with pytest.raises(ConfigError, match="parent order"):
        mri_prior(space, swapped, a, b)
    same = dataclasses.replace(comp, model_a="/data/f", model_b="/data/m")
    assert mri_prior(space, same, a, b).mean.shape == (space.dim,)


def _scans_with_parts() -> tuple[Any, Scan, Scan]:
    """_scans() plus component swaps: A's attention carries REASONING (taking B's costs A
    0.04 there, giving A's saves B 0.04), B's FFN carries CODE (0.08 either way)."""
    _, a, b = _scans()
    att_ab = np.zeros((2, L))
    att_ab[0] = 0.04
    ffn_ab = np.zeros((2, L))
    ffn_ab[1] = -0.08
    ab = SwapResult(
        LOSS_A,
        LOSS_A[:, None] + AB,
        part_swapped={"attention": LOSS_A[:, None] + att_ab, "ffn": LOSS_A[:, None] + ffn_ab},
    )
    ba = SwapResult(
        LOSS_B,
        LOSS_B[:, None] + BA,
        part_swapped={"attention": LOSS_B[:, None] - att_ab, "ffn": LOSS_B[:, None] - ffn_ab},
    )
    return compare_scans(a, b, ab, ba), a, b


def test_component_swaps_set_the_attention_and_ffn_offsets() -> None:
    comp, a, b = _scans_with_parts()
    ev = scan_evidence(comp, a, b)
    # per layer: attention z = mean(0.04 / 0.2, 0) = 0.1; FFN z = mean(0, -0.08 / 0.4) = -0.1
    np.testing.assert_allclose(ev.part_z["attention"], np.full(L, 0.1), rtol=1e-12)
    np.testing.assert_allclose(ev.part_z["ffn"], np.full(L, -0.1), rtol=1e-12)
    np.testing.assert_allclose(ev.part_conf["attention"], np.ones(L))  # both directions agree
    space = build_space(parse_space_config({"kind": "seed", "max_blocks": 4}), _ctx())
    prior = mri_prior(space, comp, a, b)
    vals = space.values(prior.mean)
    t_layer = np.array([_t(z) for z in ev.layer_z])
    assert vals["attn"] == pytest.approx(0.5 + np.mean(_t(0.1) - t_layer))
    assert vals["ffn"] == pytest.approx(0.5 + np.mean(_t(-0.1) - t_layer))
    assert vals["attn"] < 0.5 < vals["ffn"]  # attention leans to A, the FFN to B
    i = space.gene_names.index("attn")
    assert prior.sigma[i] == pytest.approx(SIGMA_MIN) and "attention" in prior.reasons[i]
    # the recipe's attention t sits below its block's t, the FFN's above
    recipe = space.decode(prior.mean)
    att, ffn, block = (float(r.value) for r in recipe.parameters["t"][:3])  # block 1's rules
    assert att < block < ffn
    # layerwise: attention anchors from the attention swaps, experts from the FFN's,
    # norms from the whole layer
    lw = build_space(parse_space_config({"kind": "layerwise"}), _ctx())
    lv = lw.values(mri_prior(lw, comp, a, b).mean)
    for layer in range(L):
        assert lv[f"attention_{layer}"] == pytest.approx(_t(0.1))
        assert lv[f"experts_{layer}"] == pytest.approx(_t(-0.1))
        assert lv[f"norms_{layer}"] == pytest.approx(_t(ev.layer_z[layer]))
    # without component swaps nothing changes: offsets 0, no confidence
    plain, a2, b2 = _scans()
    pv = space.values(mri_prior(space, plain, a2, b2).mean)
    assert pv["attn"] == 0.5 and pv["ffn"] == 0.5

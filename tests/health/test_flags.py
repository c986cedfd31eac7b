"""Flags on hand-made scans: known interference / function loss, margins, routing, loss."""

import json

import numpy as np
import pytest

from darwinmerge.errors import ArchitectureMismatchError, ConfigError
from darwinmerge.health import (
    HealthOptions,
    MoveLayerT,
    Revive,
    ScaleDensity,
    SetRouter,
    Verdict,
    health_check,
)

from .scans import MID, A, B, make_scan, trio


def test_defaults_are_the_documented_ones():
    o = HealthOptions()
    assert (o.interference_rel, o.interference_abs) == (0.25, 0.02)
    assert (o.function_loss_rel, o.function_loss_abs, o.material) == (0.5, 0.02, 0.05)
    assert (o.entropy_margin, o.loss_rel, o.move_step, o.density_factor) == (0.1, 0.05, 0.5, 0.7)
    assert o.upstream_first is True
    with pytest.raises(ValueError, match="extra"):
        HealthOptions(margin=1)  # type: ignore[call-arg]


def test_healthy_child_has_no_flags_and_says_so():
    v = health_check(*trio(MID, A, B))
    assert v.layer_flags == [] and v.routing_flags == [] and v.prescription == []
    assert v.healthy
    assert v.summary.startswith("Verdict: healthy")
    # a child exactly equal to one parent is healthy too
    assert health_check(*trio(A, A, B)).healthy


def test_known_interference_and_function_loss_are_flagged_with_their_numbers():
    child = MID.copy()
    child[0, 2] = 0.40  # hi = 0.22, margin max(0.25*0.22, 0.02) = 0.055
    child[1, 3] = 0.05  # lo = 0.33, margin max(0.5*0.33, 0.02) = 0.165
    v = health_check(*trio(child, A, B))
    assert not v.healthy
    assert [(f.layer, f.category, f.kind) for f in v.layer_flags] == [
        (2, "REASONING", "interference"),
        (3, "CODE", "function_loss"),
    ]
    inter, lost = v.layer_flags
    assert inter.excess == pytest.approx(0.40 - 0.22, rel=1e-9)
    assert inter.threshold == pytest.approx(0.055, rel=1e-9)
    assert inter.severity == pytest.approx(0.18 / 0.055, rel=1e-9)
    assert lost.excess == pytest.approx(0.33 - 0.05, rel=1e-9)
    assert lost.threshold == pytest.approx(0.165, rel=1e-9)
    assert (lost.child, lost.parent_a, lost.parent_b) == (0.05, 0.35, 0.33)
    np.testing.assert_allclose(v.layer_severity(), [0, 0, 0.18 / 0.055, 0.28 / 0.165])
    # prescription: layer 3 toward A (A's BI 0.35 > B's 0.33); layer 2 density down,
    # fallback toward B (child 0.40 is closer to B's 0.22 than A's 0.20)
    # upstream first (default): only the earliest flagged layer gets a change
    assert v.prescription == [ScaleDensity(2, 0.7, "B", 0.5, v.prescription[0].reason)]
    assert "Layers after L2 (L3)" in v.summary
    every = health_check(*trio(child, A, B), HealthOptions(upstream_first=False))
    assert every.prescription == [
        ScaleDensity(2, 0.7, "B", 0.5, every.prescription[0].reason),
        MoveLayerT(3, "A", 0.5, every.prescription[1].reason),
    ]
    assert "Layers after" not in every.summary
    assert "Interference" in v.summary and "L2 (REASONING)" in v.summary
    assert "Function loss" in v.summary and "L3 (CODE)" in v.summary


@pytest.mark.parametrize(
    ("value", "flagged"),
    [(0.22 + 0.055 - 1e-4, False), (0.22 + 0.055 + 1e-4, True)],
)
def test_interference_margin_relative(value, flagged):
    child = MID.copy()
    child[0, 2] = value
    v = health_check(*trio(child, A, B))
    assert bool(v.layer_flags) is flagged


@pytest.mark.parametrize(("value", "flagged"), [(0.14 + 0.02 - 1e-4, False), (0.14 + 0.0201, True)])
def test_interference_margin_absolute_floor_for_small_layers(value, flagged):
    child = MID.copy()
    child[0, 1] = value  # hi = 0.14: 0.25 * 0.14 = 0.035 > 0.02, so the relative one rules
    v = health_check(*trio(child, A, B), HealthOptions(interference_rel=0.1))
    # 0.1 * 0.14 = 0.014 < 0.02: the absolute floor 0.02 rules
    assert bool(v.layer_flags) is flagged


@pytest.mark.parametrize(
    ("value", "flagged"), [(0.33 - 0.165 + 1e-4, False), (0.33 - 0.165 - 1e-4, True)]
)
def test_function_loss_margin(value, flagged):
    child = MID.copy()
    child[1, 3] = value
    v = health_check(*trio(child, A, B))
    assert [f.kind for f in v.layer_flags] == (["function_loss"] if flagged else [])


def test_function_loss_needs_a_material_parent_layer():
    a, b = A.copy(), B.copy()
    a[0, 1], b[0, 1] = 0.04, 0.045  # both parents below material 0.05
    child = (a + b) / 2
    child[0, 1] = 0.0
    assert health_check(*trio(child, a, b)).layer_flags == []
    v = health_check(*trio(child, a, b), HealthOptions(material=0.04))
    assert [(f.layer, f.kind) for f in v.layer_flags] == [(1, "function_loss")]
    assert v.prescription[0] == MoveLayerT(1, "B", 0.5, v.prescription[0].reason)


def test_routing_flags_died_revived_and_entropy_collapse():
    ua = np.ones((4, 4))
    ub = np.ones((4, 4))
    uc = np.ones((4, 4))
    ua[1, 2], ub[1, 2], uc[1, 2] = 1.2, 0.02, 0.01  # died, alive in A
    ua[2, 0], ub[2, 0], uc[2, 0] = 0.0, 0.5, 0.0  # died, alive in B
    ua[3, 3], ub[3, 3], uc[3, 3] = 0.0, 0.01, 1.0  # revived
    ent_a, ent_b = np.array([0.8, 0.8, 0.8, 0.8]), np.array([0.7, 0.9, 0.7, 0.7])
    ent_c = np.array([0.61, 0.59, 0.8, 0.8])  # L0: 0.61 >= 0.7 - 0.1; L1: 0.59 < 0.8 - 0.1
    # CODE's probe loss worse than both parents (1.2 > 1.05): the loss evidence that makes
    # the routing flags count (test_routing_evidence.py: without it they are information)
    c = make_scan(MID, name="child", util=uc, entropy=ent_c, loss=np.array([1.0, 1.2]))
    a = make_scan(A, name="A", util=ua, entropy=ent_a)
    b = make_scan(B, name="B", util=ub, entropy=ent_b)
    v = health_check(c, a, b)
    got = [(f.layer, f.kind, f.experts, f.source) for f in v.routing_flags]
    assert got == [
        (1, "entropy_collapse", (), None),
        (1, "experts_died", (2,), "A"),
        (2, "experts_died", (0,), "B"),
        (3, "experts_revived", (3,), None),
    ]
    assert not v.healthy
    kinds = [type(x) for x in v.prescription]
    assert kinds == [SetRouter, Revive, Revive]
    assert v.prescription[0].source == "B"  # the parent with the higher entropy (0.9 vs 0.8)
    assert v.prescription[1] == Revive(1, (2,), "A", v.prescription[1].reason)
    assert v.prescription[2] == Revive(2, (0,), "B", v.prescription[2].reason)
    # only revived experts: informational, still healthy
    only = np.ones((4, 4))
    only[3, 3] = 0.0
    v2 = health_check(
        make_scan(MID, util=np.ones((4, 4))), make_scan(A, util=only), make_scan(B, util=only)
    )
    assert [f.kind for f in v2.routing_flags] == ["experts_revived"] and v2.healthy


def test_probe_loss_against_both_parents():
    c, a, b = (
        make_scan(MID, loss=np.array([1.2, 0.5])),
        make_scan(A, loss=np.array([1.0, 0.6])),
        make_scan(B, loss=np.array([1.1, 0.7])),
    )
    v = health_check(c, a, b)
    assert [x.status for x in v.losses] == ["worse", "better"]  # 1.2 > 1.1 * 1.05
    assert not v.healthy and "worse than both parents on REASONING" in v.summary
    c2 = make_scan(MID, loss=np.array([1.15, 0.65]))  # 1.15 <= 1.155: between
    assert [x.status for x in health_check(c2, a, b).losses] == ["between", "between"]


def test_different_probes_or_shapes_are_refused_in_one_line():
    c, a, b = trio(MID, A, B)
    other_cats = make_scan(MID, categories=["REASONING", "LOGIC"])
    with pytest.raises(ConfigError, match="probe categories") as e:
        health_check(other_cats, a, b)
    assert "\n" not in str(e.value)
    with pytest.raises(ArchitectureMismatchError, match="num_layers=3 but parent A's"):
        health_check(make_scan(MID[:, :3], sparse_layers=[0, 1, 2], util=np.ones((3, 4))), a, b)
    with pytest.raises(ConfigError, match="other probe sequences"):
        health_check(c, a, make_scan(B, tokens_per_seq=12))
    with pytest.raises(ConfigError, match="other probe sequences"):
        health_check(make_scan(MID, n_seq=6), a, b)
    with pytest.raises(ConfigError, match="loss_tokens='all'"):
        health_check(make_scan(MID, loss_tokens="all"), a, b)
    with pytest.raises(ArchitectureMismatchError, match="num_experts"):
        health_check(make_scan(MID, util=np.ones((4, 8))), a, b)


def test_verdict_round_trips_through_json(tmp_path):
    child = MID.copy()
    child[0, 2] = 0.40
    ua = np.ones((4, 4))
    uc = np.ones((4, 4))
    uc[1, 2] = 0.0
    v = health_check(
        make_scan(child, name="child", util=uc), make_scan(A, util=ua), make_scan(B, util=ua)
    )
    path = v.save(tmp_path)
    doc = json.loads(path.read_text())
    assert doc["kind"] == "verdict" and doc["healthy"] is False
    assert doc["prescription"][0]["kind"] == "scale_density"
    back = Verdict.load(tmp_path)
    assert back.layer_flags == v.layer_flags and back.routing_flags == v.routing_flags
    assert back.prescription == v.prescription and back.summary == v.summary
    assert back.options == HealthOptions().model_dump()


def test_signed_strength_matches_the_flags():
    child = MID.copy()
    child[0, 2] = 0.40
    child[1, 3] = 0.05
    child[0, 0] = 0.28  # below lo 0.30 by 0.02 < margin 0.15: not flagged, strength -0.133
    v = health_check(*trio(child, A, B))
    s = np.asarray(v.strength)
    assert s[0, 2] == pytest.approx(0.18 / 0.055, rel=1e-9)
    assert s[1, 3] == pytest.approx(-0.28 / 0.165, rel=1e-9)
    assert s[0, 0] == pytest.approx(-0.02 / 0.15, rel=1e-9)
    flagged = {(v.categories.index(f.category), f.layer) for f in v.layer_flags}
    assert flagged == {tuple(ix) for ix in np.argwhere(np.abs(s) > 1)}
    np.testing.assert_allclose(v.layer_strength(), [0.02 / 0.15, 0, 0.18 / 0.055, 0.28 / 0.165])

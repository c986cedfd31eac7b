"""Localization: the swap scans point at an overshot layer, its prescription recovers the
loss, an undamaged merge is not flagged; the weight-space projection and SetLayerT."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from darwinmerge.checkpoint.model_writer import write_into_model
from darwinmerge.health import (
    Localization,
    LocalizeOptions,
    SetLayerT,
    apply_changes,
    change_from_dict,
    change_to_dict,
    health_check,
    layer_t,
    localize,
)
from darwinmerge.health.localize import span_projection, typical_t
from darwinmerge.merge import Recipe, StateDictSource, merge_into, plan_merge
from darwinmerge.merge.recipe import Transplant
from darwinmerge.mri import run_scan

from ..mri.conftest import batches
from .scans import hand_localization

DAMAGED = 2  # the overshot layer
OVERSHOOT = 6.0  # W = A + 6 (B - A) there: gross for a briefly trained tiny model


def _recipe(layer: int | None = None, t: float = 0.5) -> Recipe:
    """50/50 linear child of a and b; ``layer`` (if given) at share ``t`` of b."""
    wa: list[dict] = [{"layers": [layer, layer], "value": 1 - t}] if layer is not None else []
    wb: list[dict] = [{"layers": [layer, layer], "value": t}] if layer is not None else []
    return Recipe.parse(
        {
            "method": "linear",
            "parents": [
                {"name": "a", "path": "/a", "parameters": {"weight": [*wa, {"value": 0.5}]}},
                {"name": "b", "path": "/b", "parameters": {"weight": [*wb, {"value": 0.5}]}},
            ],
            "parameters": {"normalize": False},
        }
    )


def _train(model: torch.nn.Module, pb, steps: int) -> torch.nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    model.train()
    for _ in range(steps):
        for b in pb:
            out = model(input_ids=b.input_ids, labels=b.input_ids)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained_pair():
    """A tiny Llama trained briefly on the probes (parent A) and A trained a little more
    (parent B): two parents in one basin, as a base model and its fine-tune."""
    from darwinmerge.zoo.tiny import build_tiny_model

    torch.manual_seed(0)
    pb = batches(per_category=3, categories=3, max_length=40)
    a = _train(build_tiny_model("llama", seed=0), pb, 12)
    b = _train(copy.deepcopy(a), pb, 4)
    return a, b, pb


def _merged(a, b, recipe: Recipe) -> torch.nn.Module:
    sources = [StateDictSource.from_model(a), StateDictSource.from_model(b)]
    child = copy.deepcopy(a)
    write_into_model(child, merge_into(plan_merge(recipe, sources), sources))
    return child


def _macro_loss(model, pb) -> float:
    return float(run_scan(model, pb).loss.mean())


def test_overshot_layer_is_flagged_there_and_its_prescription_recovers(trained_pair):
    a, b, pb = trained_pair
    good = _macro_loss(_merged(a, b, _recipe()), pb)
    bad_recipe = _recipe(DAMAGED, OVERSHOOT)
    child = _merged(a, b, bad_recipe)
    bad = _macro_loss(child, pb)
    assert bad > good * 1.05  # the damage is real
    loc = localize(child, a, b, pb)
    assert loc.flagged and loc.flagged[0] == DAMAGED
    assert loc.recovery[DAMAGED] > LocalizeOptions().margin
    # the weight space sees the overshoot at that layer only
    for comp, ts in loc.span_t.items():
        assert ts[DAMAGED] == pytest.approx(OVERSHOOT, rel=1e-4), comp
        assert loc.t_ref[comp] == pytest.approx(0.5, rel=1e-4)
    assert loc.deviating[DAMAGED] and not loc.deviating[(DAMAGED + 1) % 4]
    verdict = health_check(
        run_scan(child, pb, model_name="child"),
        run_scan(a, pb, model_name="a"),
        run_scan(b, pb, model_name="b"),
        localization=loc,
    )
    assert not verdict.healthy and verdict.localized[0] == DAMAGED
    change = verdict.prescription[0]
    assert change.layer == DAMAGED
    fixed_recipe = apply_changes(bad_recipe, [change], 4)
    if isinstance(change, SetLayerT):  # back to the child's usual share of B
        assert layer_t(fixed_recipe, DAMAGED, "attn", 4) == pytest.approx(0.5, rel=1e-9)
    fixed = _macro_loss(_merged(a, b, fixed_recipe), pb)
    assert bad - fixed >= 0.5 * (bad - good)
    assert "L2" in verdict.summary and "Damaged layer" in verdict.summary


def test_undamaged_merge_is_not_flagged(trained_pair):
    a, b, pb = trained_pair
    child = _merged(a, b, _recipe())
    before = {k: v.clone() for k, v in child.state_dict().items()}
    loc = localize(child, a, b, pb)
    assert loc.flagged == []
    assert max(loc.recovery) < LocalizeOptions().margin
    for comp, ts in loc.span_t.items():
        assert np.allclose(ts, 0.5, rtol=1e-4), comp
        assert max(loc.span_dist[comp]) < 1e-4
    # the child is left exactly as it was
    for k, v in child.state_dict().items():
        assert torch.equal(v, before[k]), k
    verdict = health_check(run_scan(child, pb), run_scan(a, pb), run_scan(b, pb), localization=loc)
    assert verdict.localized == []
    assert not any(isinstance(c, SetLayerT) for c in verdict.prescription)
    assert "No single layer explains a problem" in verdict.summary


def test_span_projection_of_a_mix_and_off_the_line():
    g = torch.Generator().manual_seed(0)
    a = {
        "x": torch.randn(5, 4, generator=g, dtype=torch.float64),
        "y": torch.randn(3, generator=g, dtype=torch.float64),
    }
    b = {
        "x": torch.randn(5, 4, generator=g, dtype=torch.float64),
        "y": torch.randn(3, generator=g, dtype=torch.float64),
    }
    comps = {"x": "attn", "y": "norm"}
    mix = {k: a[k] + 1.7 * (b[k] - a[k]) for k in a}
    t, d = span_projection(mix, a, b, comps)
    assert t == pytest.approx({"attn": 1.7, "norm": 1.7}, rel=1e-9)
    assert d["attn"] < 1e-6 and d["norm"] < 1e-6  # sqrt of a cancelling sum
    # scaled: off the line by |0.3 W - proj| / |B - A|
    scaled = {k: 0.3 * v for k, v in a.items()}
    t, d = span_projection(scaled, a, b, comps)
    w = (0.3 * a["x"] - a["x"]).flatten().double()
    dd = (b["x"] - a["x"]).flatten().double()
    want_t = float(w @ dd / (dd @ dd))
    want_d = float((w - want_t * dd).norm() / dd.norm())
    assert t["attn"] == pytest.approx(want_t, rel=1e-9)
    assert d["attn"] == pytest.approx(want_d, rel=1e-9)
    # parents equal: no t, distance relative to |A|
    t, d = span_projection({"y": 2 * a["y"]}, {"y": a["y"]}, {"y": a["y"]}, {"y": "norm"})
    assert np.isnan(t["norm"]) and d["norm"] == pytest.approx(1.0, rel=1e-9)


def test_typical_t_pools_full_and_linear_attention():
    span_t = {
        "linear_attn": [0.0, 0.0, 0.0, float("nan")],
        "attn": [float("nan")] * 3 + [2.0],
        "experts": [0.7, 0.7, 3.0, 0.7],
    }
    ref = typical_t(span_t)
    assert ref["attn"] == 0.0 and ref["linear_attn"] == 0.0  # one overshot attn layer
    assert ref["experts"] == pytest.approx(0.7)


def test_set_layer_t_on_weights_slerp_and_transplants():
    bad = _recipe(1, 2.0)
    change = SetLayerT(1, (("attn", 0.5), ("experts", 0.25)), "test")
    fixed = apply_changes(bad, [change], 4)
    assert layer_t(fixed, 1, "attn", 4) == pytest.approx(0.5)
    assert layer_t(fixed, 1, "experts", 4) == pytest.approx(0.25)
    assert layer_t(fixed, 1, "norm", 4) == pytest.approx(2.0)  # not named: unchanged
    assert layer_t(fixed, 0, "attn", 4) == pytest.approx(0.5)
    # weights back on the recipe's usual scale (sum 1 here), not the damaged layer's
    from darwinmerge.merge import resolve_schedule

    wa = resolve_schedule(
        fixed.parents[0].parameters["weight"],
        layer=1,
        component="experts",
        tensor_name="x",
        num_layers=4,
    )
    assert wa == pytest.approx(0.75)
    # transplants at the layer go when its experts are set
    with_tp = bad.model_copy(
        update={
            "transplants": [
                Transplant(layer=1, expert=0, source="a"),
                Transplant(layer=2, expert=0, source="a"),
            ]
        }
    )
    out = apply_changes(with_tp, [change], 4)
    assert [(tp.layer, tp.expert) for tp in out.transplants] == [(2, 0)]
    # so do they when the whole layer is taken from a parent (not for a partial move)
    from darwinmerge.health import MoveLayerT

    out = apply_changes(with_tp, [MoveLayerT(1, "B", 1.0, "x")], 4)
    assert [(tp.layer, tp.expert) for tp in out.transplants] == [(2, 0)]
    out = apply_changes(with_tp, [MoveLayerT(1, "B", 0.5, "x")], 4)
    assert len(out.transplants) == 2
    # slerp pins t
    slerp = Recipe.parse(
        {
            "method": "slerp",
            "parents": [{"name": "a", "path": "/a"}, {"name": "b", "path": "/b"}],
            "parameters": {"t": 0.3},
        }
    )
    out = apply_changes(slerp, [SetLayerT(3, (("attn", 0.9),), "x")], 4)
    assert layer_t(out, 3, "attn", 4) == pytest.approx(0.9)
    assert layer_t(out, 2, "attn", 4) == pytest.approx(0.3)
    # JSON round trip
    assert change_from_dict(change_to_dict(change)) == change


def test_report_and_summary_show_the_localization():
    from darwinmerge.report import health_section

    from .scans import MID, A, B, trio

    v = health_check(*trio(MID, A, B), localization=hand_localization([1], [0.0, 0.25, 0.01, 0.0]))
    assert not v.healthy and v.localized == [1]
    assert v.prescription[0] == SetLayerT(1, (("attn", 0.5),), v.prescription[0].reason)
    assert "L1 (put back into the parents' span: probe loss 25.0% lower)" in v.summary
    sec = health_section(v)
    table = sec.find("Localization")
    assert table.rows[1][:4] == ("L1", "+25.0%", "+0.0%", "-5.0%")
    assert "attn t=2.00" in table.rows[1][4] and table.rows[1][5] == "#1"
    # healthy: what was checked and what it does not rule out
    ok = health_check(*trio(MID, A, B), localization=hand_localization([], [0.0, 0.01, 0.0, 0.0]))
    assert ok.healthy
    assert "probe sequences" in ok.summary and "does not rule out" in ok.summary
    assert "No single layer explains a problem" in ok.summary
    # a round trip keeps the localization
    from darwinmerge.health import Verdict

    back = Verdict.from_dict(v.to_dict())
    assert back.localized == [1] and back.prescription == v.prescription


def test_a_worse_loss_with_no_localized_layer_says_so_and_names_suspects():
    from .scans import MID, A, B, make_scan

    loss_a, loss_b = [1.0, 1.0], [1.1, 1.1]
    worse = make_scan(MID, name="c", loss=np.array([1.5, 1.5]))
    loc = hand_localization([], [0.0, 0.01, 0.0, 0.0])
    loc.deviating = [["experts"], [], [], []]
    v = health_check(
        worse,
        make_scan(A, name="a", loss=np.array(loss_a)),
        make_scan(B, name="b", loss=np.array(loss_b)),
        localization=loc,
    )
    assert not v.healthy and v.localized == []
    assert "No single layer explains a problem" in v.summary
    assert "still worse than both parents'" in v.summary
    assert "Suspects by weights alone" in v.summary and "L0 (experts)" in v.summary
    assert "the whole recipe's t moved toward the better parent" in v.summary
    assert not any(isinstance(c, SetLayerT) for c in v.prescription)


def test_deviation_is_relative_to_the_childs_usual_t_and_distance():
    from darwinmerge.health.localize import deviating_components

    # a TIES-like child: every layer 0.3 off the line, t 0.5; layer 2 further off
    span_t = {"experts": [0.5, 0.5, 0.5, 0.5], "attn": [0.5, 0.5, 0.5, 0.62]}
    span_dist = {"experts": [0.3, 0.3, 0.42, 0.3], "attn": [0.0, 0.0, 0.0, 0.0]}
    ref = typical_t(span_t)
    got = [deviating_components(span_t, span_dist, ref, i, 0.05) for i in range(4)]
    assert got == [[], [], ["experts"], ["attn"]]
    # equal parents (t NaN): judged by distance alone
    got = deviating_components(
        {"norm": [float("nan")] * 3}, {"norm": [0.0, 0.7, 0.0]}, {"norm": float("nan")}, 1, 0.05
    )
    assert got == ["norm"]


def test_when_every_layer_deviates_only_the_revert_effect_flags_and_ranks():
    from darwinmerge.health.localize import every_layer_deviates, flag_layers

    opt = LocalizeOptions()
    rec = {
        "span": np.array([0.030, 0.025, 0.0, 0.020]),
        "A": np.array([0.0, 0.080, 0.0, 0.0]),  # L1 taken from parent A: 8 % lower loss
        "B": np.array([0.0, 0.0, 0.0, 0.050]),  # L3 from parent B: 5 %
    }
    # L2 in the span: the deviation route ranks first (by span recovery: L0, L1, L3)
    assert opt.deviation_margin < rec["span"][3] < rec["span"][0] < opt.margin
    some = [["experts"], ["experts"], [], ["attn"]]
    assert not every_layer_deviates(some)
    assert flag_layers(rec, some, opt) == [0, 1, 3]
    # every layer off the parents' line (a trimmed merge): no deviation route (L0's 3 %
    # span recovery is below the 4 % margin), the revert effect flags and ranks
    every = [["experts"], ["experts"], ["experts"], ["attn"]]
    assert every_layer_deviates(every)
    assert flag_layers(rec, every, opt) == [1, 3]
    assert not every_layer_deviates([["experts"]])  # one layer: nothing to rank


def test_localize_ranks_by_revert_effect_on_a_child_off_the_line_everywhere(trained_pair):
    a, b, pb = trained_pair
    # every layer at its own t (0.1 .. 0.9: each deviates from the median), L2 overshot
    data = _recipe().model_dump(mode="python")
    ts = {0: 0.1, 1: 0.9, 2: OVERSHOOT, 3: 0.3}
    for i, p in enumerate(data["parents"]):
        rules = [{"layers": [layer, layer], "value": [1 - t, t][i]} for layer, t in ts.items()]
        p["parameters"]["weight"] = [*rules, *p["parameters"]["weight"]]
    child = _merged(a, b, Recipe.parse(data))
    loc = localize(child, a, b, pb)
    assert all(loc.deviating) and any("measured revert effect" in n for n in loc.notes)
    assert loc.flagged and loc.flagged[0] == DAMAGED
    rec = np.asarray(loc.recovery)
    assert list(rec[loc.flagged]) == sorted(rec[loc.flagged], reverse=True)
    assert all(rec[loc.flagged] > loc.margin)


def test_a_worse_loss_with_every_layer_deviating_names_no_suspect_by_weights():
    from .scans import MID, A, B, make_scan

    loc = hand_localization([], [0.0, 0.01, 0.0, 0.0])
    loc.deviating = [["experts"], ["experts"], ["attn"], ["experts"]]
    v = health_check(
        make_scan(MID, name="c", loss=np.array([1.5, 1.5])),
        make_scan(A, name="a", loss=np.array([1.0, 1.0])),
        make_scan(B, name="b", loss=np.array([1.1, 1.1])),
        localization=loc,
    )
    assert "Every layer deviates from the parents' weights" in v.summary
    assert "largest revert effect is at L1" in v.summary
    assert "Suspects by weights alone" not in v.summary


def test_a_layer_set_to_another_mix_of_the_parents_needs_the_full_margin():
    from darwinmerge.health.localize import (
        deviating_components,
        flag_layers,
        leaving_span_components,
    )

    # L1 at t 0.8 (a golden layer taken mostly from B), L2 past B (t 1.5), L3 off the line
    span_t = {"experts": [0.1, 0.8, 1.5, 0.1], "norm": [0.1, 0.1, 0.1, 0.1]}
    span_dist = {"experts": [0.0, 0.0, 0.0, 0.0], "norm": [0.0, 0.0, 0.0, 0.2]}
    ref = typical_t(span_t)
    assert ref["experts"] == pytest.approx(0.45)  # median of 0.1, 0.8, 1.5, 0.1
    ref = {"experts": 0.1, "norm": 0.1}  # the recipe's usual t
    dev = [deviating_components(span_t, span_dist, ref, i, 0.05) for i in range(4)]
    leaving = [leaving_span_components(span_t, span_dist, ref, i, 0.05) for i in range(4)]
    assert dev == [[], ["experts"], ["experts"], ["norm"]]
    assert leaving == [[], [], ["experts"], ["norm"]]
    rec = {
        "span": np.array([0.0, 0.03, 0.025, 0.02]),
        "A": np.zeros(4),
        "B": np.zeros(4),
    }
    opt = LocalizeOptions()
    assert opt.deviation_margin < rec["span"][3] and rec["span"][1] < opt.margin
    assert flag_layers(rec, dev, opt, leaving) == [2, 3]  # L1's 3 % is below the 4 % margin
    assert flag_layers(rec, dev, opt) == [1, 2, 3]  # every deviation (stored rows)
    rec["A"] = np.array([0.0, 0.05, 0.0, 0.0])  # a parent's layer lowers it by 5 %
    assert flag_layers(rec, dev, opt, leaving) == [2, 3, 1]


def test_localize_records_the_components_leaving_the_span(trained_pair):
    a, b, pb = trained_pair
    loc = localize(_merged(a, b, _recipe(DAMAGED, OVERSHOOT)), a, b, pb)
    assert loc.leaving[DAMAGED] == loc.deviating[DAMAGED] != []  # t = 6: past parent B
    assert not any(loc.leaving[i] for i in range(4) if i != DAMAGED)
    inside = localize(_merged(a, b, _recipe(DAMAGED, 0.9)), a, b, pb)  # another mix
    assert inside.deviating[DAMAGED] and inside.leaving[DAMAGED] == []
    assert Localization.from_dict(loc.to_dict()).leaving == loc.leaving

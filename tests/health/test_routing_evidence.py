"""A routing flag (an expert died, a router collapsed) counts only with loss evidence: a
probe category worse than both parents, or its layer localized by the swap scans.
Without it the flag is information: healthy verdict, nothing prescribed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from darwinmerge.health import Revive, SetLayerT, SetRouter, health_check, localize
from darwinmerge.mri import run_scan
from darwinmerge.mri.layout import resolve_layout
from darwinmerge.zoo.tiny import build_tiny_model

from ..mri.conftest import batches
from .scans import MID, A, B, hand_localization, make_scan

LAYER, EXPERT = 1, 2  # the expert that dies in the child


def _died_trio(child_loss: list[float]):
    """Scans where expert 2 of L1 is alive in both parents (A more) and dead in the
    child, and L2's router entropy collapsed; parents' probe loss 1.0 / 1.0."""
    ua, uc = np.ones((4, 4)), np.ones((4, 4))
    ua[LAYER, EXPERT], uc[LAYER, EXPERT] = 1.3, 0.0
    ent_c = np.array([0.8, 0.8, 0.5, 0.8])  # 0.5 < 0.8 - 0.1
    return (
        make_scan(MID, name="child", util=uc, entropy=ent_c, loss=np.array(child_loss)),
        make_scan(A, name="A", util=ua),
        make_scan(B, name="B"),
    )


def test_routing_flags_without_loss_evidence_are_information():
    v = health_check(*_died_trio([1.04, 0.9]))  # within 5 % of the parents, or better
    assert [(f.layer, f.kind, f.loss_evidence) for f in v.routing_flags] == [
        (LAYER, "experts_died", False),
        (2, "entropy_collapse", False),
    ]
    assert v.healthy and v.prescription == []
    assert v.summary.startswith("Verdict: healthy")
    assert "Routing changes without loss evidence" in v.summary
    assert f"L{LAYER} expert(s) [{EXPERT}] died (alive in A)" in v.summary
    assert "L2 router entropy 0.50 vs 0.80/0.80" in v.summary
    # the flags keep their evidence through JSON
    from darwinmerge.health import Verdict

    back = Verdict.from_dict(v.to_dict())
    assert back.routing_flags == v.routing_flags and back.healthy


def test_a_worse_probe_loss_is_evidence_for_every_routing_flag():
    v = health_check(*_died_trio([1.06, 0.9]))  # REASONING 1.06 > 1.0 * 1.05
    assert [f.loss_evidence for f in v.routing_flags] == [True, True]
    assert not v.healthy
    assert v.prescription == [
        Revive(LAYER, (EXPERT,), "A", v.prescription[0].reason),
        SetRouter(2, "A", v.prescription[1].reason),
    ]
    assert "Routing changes without loss evidence" not in v.summary
    assert "1 expert(s) died in the child" in v.summary


def test_a_localized_layer_is_evidence_for_its_own_routing_flag_only():
    c, a, b = _died_trio([1.0, 1.0])
    at_layer = health_check(c, a, b, localization=hand_localization([LAYER], [0, 0.25, 0, 0]))
    died, collapse = at_layer.routing_flags
    assert died.loss_evidence and not collapse.loss_evidence
    assert [type(x) for x in at_layer.prescription] == [SetLayerT, Revive]
    assert at_layer.prescription[1].layer == LAYER
    elsewhere = health_check(c, a, b, localization=hand_localization([3], [0, 0, 0, 0.25]))
    assert not any(f.loss_evidence for f in elsewhere.routing_flags)
    assert [type(x) for x in elsewhere.prescription] == [SetLayerT]
    assert not elsewhere.healthy  # L3 localized: a layer problem, not a routing one


@pytest.fixture(scope="module")
def dead_expert_child():
    """A tiny Mixtral parent A, parent B = A + small noise, and their 50/50 child whose
    router row of expert 2 at L1 points against the probes' router inputs, so the child
    routes (nearly) no probe token there: the died-expert signature of a merge that
    changed routing, with no loss to show for it."""
    pb = batches(per_category=3, categories=3, max_length=40)
    a = build_tiny_model("mixtral", seed=0)
    b = copy.deepcopy(a)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    child = copy.deepcopy(a)
    with torch.no_grad():
        for p, q in zip(child.parameters(), b.parameters(), strict=True):
            p.copy_((p + q) / 2)
    router = resolve_layout(child).routers[LAYER]
    inputs: list[torch.Tensor] = []
    hook = router.register_forward_hook(
        lambda m, i, o: inputs.append(i[0].detach().reshape(-1, i[0].shape[-1]))
    )
    with torch.no_grad():
        for batch in pb:
            child(input_ids=batch.input_ids)
    hook.remove()
    x = torch.cat(inputs).double()
    # w with <w, x> ~ 1 for every router input: -20 w / |w| makes the expert's logit low
    w = torch.linalg.lstsq(x, torch.ones(len(x), 1, dtype=x.dtype)).solution[:, 0]
    with torch.no_grad():
        router.weight[EXPERT] = (-20 * w / w.norm()).float()
    scans = tuple(run_scan(m, pb, model_name=n) for m, n in ((child, "c"), (a, "a"), (b, "b")))
    return child, a, b, pb, scans


def test_tiny_moe_child_with_a_dead_expert_and_no_loss_is_healthy(dead_expert_child):
    child, a, b, pb, (sc, sa, sb) = dead_expert_child
    s = sa.sparse_layers.index(LAYER)
    assert sc.utilisation[s, EXPERT] < sc.dead_threshold  # the signature is real
    assert min(sa.utilisation[s, EXPERT], sb.utilisation[s, EXPERT]) >= sa.dead_threshold
    loc = localize(child, a, b, pb)
    v = health_check(sc, sa, sb, localization=loc)
    died = [f for f in v.routing_flags if f.kind == "experts_died"]
    assert [(f.layer, f.experts) for f in died] == [(LAYER, (EXPERT,))]
    assert not died[0].loss_evidence
    assert [c.status for c in v.losses].count("worse") == 0 and v.localized == []
    assert v.healthy and v.prescription == []
    assert "Routing changes without loss evidence" in v.summary


def test_tiny_moe_child_with_a_dead_expert_and_a_worse_loss_is_flagged(dead_expert_child):
    child, a, b, pb, (_, sa, sb) = dead_expert_child
    hurt = copy.deepcopy(child)
    with torch.no_grad():  # outside the decoder layers: sharper, wrong next-token guesses
        resolve_layout(hurt).norm.weight.mul_(6.0)
    sc = run_scan(hurt, pb, model_name="hurt")
    v = health_check(sc, sa, sb, localization=localize(hurt, a, b, pb))
    assert any(c.status == "worse" for c in v.losses)
    died = [f for f in v.routing_flags if f.kind == "experts_died"]
    assert [(f.layer, f.loss_evidence) for f in died] == [(LAYER, True)]
    assert not v.healthy
    revive = [c for c in v.prescription if isinstance(c, Revive)]
    assert [(c.layer, c.experts) for c in revive] == [(LAYER, (EXPERT,))]

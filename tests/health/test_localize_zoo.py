"""On the trained demo zoo (slow): the issue's hand-made child, a 50/50 linear merge of
father and mother with one layer overshot past the mother (``W = F + 2 (M - F)``), is
localized at that layer and its prescription recovers the loss; the undamaged merge is
not flagged; the benchmark's fast mode runs."""

from __future__ import annotations

import copy

import pytest
import torch

from darwinmerge.checkpoint.model_writer import write_into_model
from darwinmerge.health import apply_changes, health_check, localize
from darwinmerge.merge import StateDictSource, merge_into, plan_merge

pytestmark = pytest.mark.slow

DAMAGED = 3


@pytest.fixture(scope="module")
def zoo_setup(trained_zoo):
    from transformers import AutoModelForCausalLM

    from darwinmerge.checkpoint.tokenizer import load_tokenizer
    from darwinmerge.evaluate import TransformersBackend, load_tasks
    from darwinmerge.evaluate.tasks import stratified_subset
    from darwinmerge.mri import resolve_probes, run_scan, tokenize_probes
    from darwinmerge.zoo.recipes import UNIFORM_HALF, to_recipe

    zoo = trained_zoo
    fa = AutoModelForCausalLM.from_pretrained(zoo / "father", dtype=torch.float32).eval()
    mo = AutoModelForCausalLM.from_pretrained(zoo / "mother", dtype=torch.float32).eval()
    tok = load_tokenizer(zoo / "father")
    pb = tokenize_probes(resolve_probes([f"zoo@{zoo}"]), tok, max_length=128, batch_size=16)
    test = stratified_subset(load_tasks(f"zoo:{zoo}", split="test"), 30, seed=0)
    recipe = to_recipe(UNIFORM_HALF, zoo / "father", zoo / "mother")
    sources = [StateDictSource.from_model(fa), StateDictSource.from_model(mo)]
    child = copy.deepcopy(fa)
    backend = TransformersBackend(child, tok, batch_size=32, max_new_tokens=32)
    scans = (run_scan(fa, pb, model_name="father"), run_scan(mo, pb, model_name="mother"))
    return fa, mo, pb, test, recipe, sources, child, backend, scans


def _merge(setup, recipe):
    fa, mo, pb, test, _, sources, child, backend, _ = setup
    write_into_model(child, merge_into(plan_merge(recipe, sources), sources))
    return child


def _test_score(setup) -> float:
    from darwinmerge.evaluate import evaluate

    return float(evaluate(setup[7], setup[3]).overall.score)


def _overshot(recipe, layer: int, t: float = 2.0):
    from darwinmerge.merge import Recipe

    data = recipe.model_dump(mode="python")
    for i, p in enumerate(data["parents"]):
        rule = {"layers": [layer, layer], "value": [1 - t, t][i]}
        p["parameters"]["weight"] = [rule, *p["parameters"]["weight"]]
    return Recipe.parse(data)


def test_overshot_layer_of_the_50_50_child_is_localized_and_repaired(zoo_setup):
    from darwinmerge.mri import run_scan

    fa, mo, pb, _, recipe, _, _, _, (sa, sb) = zoo_setup
    child = _merge(zoo_setup, recipe)
    good_loss = float(run_scan(child, pb).loss.mean())
    good = _test_score(zoo_setup)
    bad_recipe = _overshot(recipe, DAMAGED)
    child = _merge(zoo_setup, bad_recipe)
    scan = run_scan(child, pb, model_name="overshot")
    bad_loss = float(scan.loss.mean())
    bad = _test_score(zoo_setup)
    assert bad_loss > 1.05 * good_loss  # the overshoot is real damage on the probes
    loc = localize(child, fa, mo, pb)
    verdict = health_check(scan, sa, sb, localization=loc)
    assert not verdict.healthy
    assert verdict.localized[0] == DAMAGED
    assert loc.span_t["experts"][DAMAGED] == pytest.approx(2.0, rel=1e-3)
    change = verdict.prescription[0]
    assert change.layer == DAMAGED
    fixed_recipe = apply_changes(bad_recipe, [change], loc.num_layers)
    child = _merge(zoo_setup, fixed_recipe)
    fixed_loss = float(run_scan(child, pb).loss.mean())
    fixed = _test_score(zoo_setup)
    assert bad_loss - fixed_loss >= 0.5 * (bad_loss - good_loss)
    if good - bad >= 0.05:  # a test loss worth repairing: at least half of it comes back
        assert fixed - bad >= 0.5 * (good - bad)


def test_undamaged_50_50_child_is_not_flagged(zoo_setup):
    from darwinmerge.mri import run_scan

    fa, mo, pb, _, recipe, _, _, _, (sa, sb) = zoo_setup
    child = _merge(zoo_setup, recipe)
    loc = localize(child, fa, mo, pb)
    verdict = health_check(run_scan(child, pb), sa, sb, localization=loc)
    assert verdict.localized == []
    assert max(loc.recovery) < loc.margin
    for comp, ts in loc.span_t.items():
        assert all(abs(t - 0.5) < 1e-3 for t in ts if t == t), comp  # NaN: not in that layer


def test_benchmark_fast_mode(trained_zoo):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "health_validation.py"
    spec = importlib.util.spec_from_file_location("health_validation", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    summary = mod.main(["--zoo", str(trained_zoo), "--fast"])
    a = summary["all"]
    assert a["children"] == 4  # two undamaged bases, overshoot at two layers
    assert a["calm"] >= 2 and a["alarms"] <= a["calm"]
    assert a["localized"] <= a["damaged"] and a["repaired"] <= a["localized"]

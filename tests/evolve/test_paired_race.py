"""The paired race of a continuous fitness: a candidate is stopped when the upper bound of
its final fitness minus the incumbent's, from the per-item differences scored so far, is
below zero (evolve/early_stop.py). Checked on the formula by hand, on a synthetic
objective with known noise (how often it stops a candidate that would have won, and what
it saves), in the worker on the micro zoo, and in a search."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from darwinmerge.evaluate.tasks import load_tasks, stratified_subset
from darwinmerge.evolve.api import blind_box, run_evolution
from darwinmerge.evolve.config import EvolveConfig
from darwinmerge.evolve.early_stop import EarlyStopRule
from darwinmerge.evolve.runner import incumbent_values
from darwinmerge.evolve.workers import CandidateRequest, CandidateWorker, WorkerSpec

from .search_helpers import TwoGeneSpace, config_data, micro_zoo  # noqa: F401


def test_paired_bound_by_hand():
    rule = EarlyStopRule(z=2.0, min_items=2)
    planned = {"a": 10, "b": 4}
    diffs = {"a": [-0.1, -0.3, 0.0, -0.2], "b": [0.1, -0.1]}
    # a: n 4, sum -0.6, mean -0.15, s^2 = 0.05 / 3, rest 6
    # b: n 2, sum 0.0, mean 0.0, s^2 = 0.02, rest 2
    mean = ((-0.6 + 6 * -0.15) / 10 + (0.0 + 2 * 0.0) / 4) / 2
    var = (0.05 / 3) * 6 * 10 / 4 / (2 * 10) ** 2 + 0.02 * 2 * 4 / 2 / (2 * 4) ** 2
    want = mean + 2.0 * math.sqrt(var)
    got = rule.paired_upper_bound(diffs, planned, ["a", "b"])
    assert got == pytest.approx(want, rel=1e-12)
    assert got == pytest.approx(-0.075 + 2.0 * math.sqrt(0.001875), rel=1e-12)  # +0.0116
    assert not rule.should_stop_paired(diffs, planned, ["a", "b"])
    # a narrower bound (z = 1: -0.0317) excludes a tie: the candidate stops
    assert EarlyStopRule(z=1.0, min_items=2).should_stop_paired(diffs, planned, ["a", "b"])
    # every item scored: the bound is the exact difference, no spread left
    done = {"a": [-0.01] * 10, "b": [0.0] * 4}
    assert rule.paired_upper_bound(done, planned, ["a", "b"]) == pytest.approx(-0.005)
    # too few items of a category: never stops, however bad the rest
    assert not rule.should_stop_paired({"a": [-1.0] * 5, "b": [-1.0]}, planned, ["a", "b"])
    assert not EarlyStopRule(min_items=6).should_stop_paired(
        {"a": [-1.0, -0.9] * 2, "b": [-1.0, -0.9]}, planned, ["a", "b"]
    )


def _race(rule, cand, inc, cats, chunk):
    """Items scored in chunks (in item order) until the rule stops: (stopped, items)."""
    planned = {c: int((cats == c).sum()) for c in set(cats.tolist())}
    names = sorted(planned)
    for done in range(chunk, len(cand), chunk):
        seen = cats[:done]
        diffs = {c: list(cand[:done][seen == c] - inc[:done][seen == c]) for c in names}
        if rule.should_stop_paired(diffs, planned, names):
            return True, done
    return False, len(cand)


def _macro(values, cats):
    return float(np.mean([values[cats == c].mean() for c in sorted(set(cats.tolist()))]))


def test_paired_race_on_a_synthetic_objective_with_known_noise():
    """Items with their own difficulty (shared by every candidate) and per-item noise of a
    known spread; candidates differ from the incumbent by a true gap. The race must stop
    clearly worse candidates early and almost never stop one whose full-split fitness
    would have beaten the incumbent's."""
    rng = np.random.default_rng(0)
    n_items, k = 730, 5
    cats = np.array([i % k for i in range(n_items)])  # interleaved, as the subset is
    difficulty = rng.normal(0.0, 0.25, n_items)
    rule = EarlyStopRule(z=1.96, min_items=4)
    wins_stopped = wins = 0
    used_bad: list[int] = []
    for _ in range(400):
        gap = rng.uniform(-0.06, 0.02)
        base = 0.6 + difficulty
        inc = base + rng.normal(0.0, 0.08, n_items)
        cand = base + gap + rng.normal(0.0, 0.08, n_items)
        stopped, used = _race(rule, cand, inc, cats, chunk=50)
        would_win = _macro(cand, cats) > _macro(inc, cats)
        wins += would_win
        wins_stopped += stopped and would_win
        if gap < -0.04:
            used_bad.append(used)
    assert wins > 50  # the check below is not vacuous
    assert wins_stopped / wins <= 0.03
    # clearly worse candidates (true gap below -0.04, about 8 noise s.e. of one item over
    # the split) are stopped after at most a fifth of the items, at the median
    assert len(used_bad) > 50 and np.median(used_bad) <= n_items / 5


def _spec(zoo, **kw):
    items = stratified_subset(load_tasks(f"zoo:{zoo}", split="fitness"), 1.0, seed=0)
    return WorkerSpec(
        parents=(("father", str(zoo / "father")), ("mother", str(zoo / "mother"))),
        base=None,
        items=tuple(items),
        categories=tuple(sorted({it.category for it in items})),
        score="gold_prob",
        chunk_size=4,
        batch_size=32,
        max_new_tokens=8,
        **kw,
    )


def test_the_worker_races_a_candidate_against_the_incumbent(micro_zoo):  # noqa: F811
    space = TwoGeneSpace(micro_zoo / "father", micro_zoo / "mother")
    recipe = space.decode(np.array([0.5, 0.5])).to_yaml()
    plain = CandidateWorker(_spec(micro_zoo))
    full = plain.score(CandidateRequest(0, recipe))
    assert full.state == "complete" and len(full.item_values) == full.items_planned
    assert full.fitness == pytest.approx(np.mean(list(full.values.values())))
    rule = EarlyStopRule(z=1.96, min_items=2)
    racer = CandidateWorker(_spec(micro_zoo, rule=rule))
    # an incumbent better by 0.5 on every item: the candidate stops at the first check
    better = tuple(v + 0.5 for v in full.item_values)
    res = racer.score(CandidateRequest(1, recipe, full.fitness + 0.5, better))
    assert res.state == "pruned" and res.stop_at == res.items_used < res.items_planned
    # audited: the same stop point, every item scored, the full fitness recorded
    audit = CandidateWorker(_spec(micro_zoo, rule=rule, audit=True))
    res2 = audit.score(CandidateRequest(1, recipe, full.fitness + 0.5, better))
    assert res2.state == "complete" and res2.stop_at == res.stop_at
    assert res2.full_fitness == pytest.approx(full.fitness, rel=1e-9)
    # an incumbent worse on every item, none, or one scored on other items: no stop
    worse = tuple(v - 0.5 for v in full.item_values)
    for incumbent in (worse, None, better[:-1]):
        res3 = racer.score(CandidateRequest(2, recipe, full.fitness, incumbent))
        assert res3.state == "complete" and res3.items_used == res3.items_planned


def test_a_search_races_on_the_best_trials_values(micro_zoo, tmp_path):  # noqa: F811
    cfg = EvolveConfig.model_validate(
        config_data(
            micro_zoo,
            trials=8,
            fitness={"score": "gold_logprob", "subset": 1.0, "chunk_size": 4},
            early_stop={"enabled": True, "z": 1.0, "min_items": 2, "audit": True},
            select={"write_child": False},
        )
    )
    space = TwoGeneSpace(micro_zoo / "father", micro_zoo / "mother")
    run_evolution(cfg, space, blind_box(["t_mlp", "t_rest"]), tmp_path / "run")
    record = json.loads((tmp_path / "run" / "evolution.json").read_text())
    rows = [r for r in record["trials"] if r["state"] == "complete" and not r["cached_from"]]
    assert rows and all(len(r["item_values"]) == r["items_planned"] for r in rows)
    for r in rows:  # the stored values are the fitness's items
        by_cat = [v for v in r["fitness"].values()]
        assert r["values"][0] == pytest.approx(np.mean(by_cat), rel=1e-6)
    # the audited race decided against some candidates (each after a few chunks), and
    # every one of them ended below the best fitness known when it was stopped
    audit = record["early_stop"]
    assert audit["stopped"] >= 2 and audit["false_stops"] == 0 and audit["items_saved"] > 0
    best = -math.inf
    for r in rows:
        if r["ucb_stop_at"] is not None:
            assert r["ucb_stop_at"] < r["items_planned"] and r["full_fitness"] < best
        best = max(best, r["values"][0])


def test_the_incumbent_is_the_best_complete_trial():
    import optuna

    study = optuna.create_study(direction="maximize")
    for value, items in ((0.3, [0.1, 0.2]), (0.7, [0.6, 0.8]), (0.9, None), (0.5, [0.4, 0.6])):
        trial = study.ask()
        if items is not None:
            trial.set_user_attr("item_values", items)
        study.tell(trial, value)
    # 0.9 has no per-item values (answered from the cache): the best one with values
    assert incumbent_values(study) == (0.6, 0.8)
    assert incumbent_values(optuna.create_study(direction="maximize")) is None


def test_the_start_first_is_the_incumbent_of_a_cmaes_race(micro_zoo, tmp_path):  # noqa: F811
    """``optimizer.start_first``: CMA-ES's first trial is the prior's mean genome; it is
    scored on every item and every later complete candidate beat it on the same items."""
    cfg = EvolveConfig.model_validate(
        config_data(
            micro_zoo,
            trials=8,
            fitness={"score": "gold_logprob", "subset": 1.0, "chunk_size": 4},
            early_stop={"enabled": True, "z": 1.0, "min_items": 2},
            optimizer={"name": "cmaes", "seed": 1, "popsize": 4, "start_first": True},
            select={"write_child": False},
        )
    )
    space = TwoGeneSpace(micro_zoo / "father", micro_zoo / "mother")
    box = blind_box(["t_mlp", "t_rest"])
    run_evolution(cfg, space, box, tmp_path / "run")
    trials = json.loads((tmp_path / "run" / "evolution.json").read_text())["trials"]
    assert trials[0]["genome"] == pytest.approx(list(box.mean))
    assert trials[0]["state"] == "complete" and trials[0]["ucb_stop_at"] is None
    assert len({tuple(t["genome"]) for t in trials}) == len(trials)  # CMA-ES went on
    stopped = [t for t in trials if t["state"] == "pruned"]
    assert stopped and all(t["items_used"] < t["items_planned"] for t in stopped)


def test_a_stopped_candidate_says_its_fitness_is_partial():
    from darwinmerge.evolve.runner import TrialEvent

    def event(state, cached=False):
        return TrialEvent(3, state, 0.74123, 0.708, 4, 16, 0.5, 0.4, 40, cached=cached)

    assert event("complete").fitness_text() == "0.741"
    assert event("pruned").fitness_text(4) == "0.7412 on 40 items, stopped: behind the best"
    assert event("pruned", cached=True).fitness_text() == "0.741"
    assert TrialEvent(0, "fail", None, None, 1, 16, 0.0, 0.0, 0).fitness_text() == "-"


def test_resume_of_a_study_cut_off_while_it_was_created(micro_zoo, tmp_path):  # noqa: F811
    """A kill between the study's creation and its attributes left a study without its box:
    resume said KeyError 'darwin.box'. Such a study (no creation mark, no trial) is made
    afresh; a complete one is marked."""
    import optuna

    from darwinmerge.evolve.study import STUDY_NAME, half_created, open_storage

    cfg = EvolveConfig.model_validate(
        config_data(micro_zoo, trials=2, select={"write_child": False})
    )
    space = TwoGeneSpace(micro_zoo / "father", micro_zoo / "mother")
    box = blind_box(["t_mlp", "t_rest"])
    out = tmp_path / "run"
    run_evolution(cfg, space, box, out)
    storage = open_storage(out)
    assert not half_created(storage)
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    assert study.user_attrs["darwin.created"] is True
    # the kill: the study exists, nothing else does
    (out / "study.journal").unlink()
    optuna.create_study(storage=open_storage(out), study_name=STUDY_NAME, direction="maximize")
    assert half_created(open_storage(out))
    messages: list[str] = []
    result = run_evolution(cfg, space, box, out, resume=True, log=messages.append)
    assert any("starting it afresh" in m for m in messages)
    trials = json.loads((out / "evolution.json").read_text())["trials"]
    assert len(trials) == 2 and trials[0]["genome"] == pytest.approx(list(box.mean))
    assert result.winner in (0, 1)
    # killed before the study existed at all: the same
    (out / "study.journal").unlink()
    assert half_created(open_storage(out))
    run_evolution(cfg, space, box, out, resume=True)
    assert len(json.loads((out / "evolution.json").read_text())["trials"]) == 2


class _SpaceWithBlindStart(TwoGeneSpace):
    def blind_mean(self) -> np.ndarray:
        return np.array([0.5, 0.5])


def test_the_anchor_is_the_blind_start_scored_second_inside_a_widened_box(
    micro_zoo,  # noqa: F811
    tmp_path,
):
    """``optimizer.anchor``: a search from a prior that is not the blind start also scores
    the blind start (second trial), and its box grows to hold it; a blind search has no
    anchor (its start is the blind start), nor has ``anchor: false``; user bounds clip it."""
    from darwinmerge.evolve.optimizer import SearchBox
    from darwinmerge.evolve.study import open_storage, stored_box

    space = _SpaceWithBlindStart(micro_zoo / "father", micro_zoo / "mother")
    guided = SearchBox(("t_mlp", "t_rest"), (0.15, 0.85), (0.05, 0.05), (0.0, 0.7), (0.3, 1.0))

    def run(name: str, box: SearchBox, **extra) -> list[dict]:
        cfg = EvolveConfig.model_validate(
            config_data(
                micro_zoo,
                trials=4,
                fitness={"score": "gold_logprob", "subset": 1.0},
                optimizer={"name": "cmaes", "seed": 1, "popsize": 4, **extra.pop("opt", {})},
                select={"write_child": False},
                **extra,
            )
        )
        run_evolution(cfg, space, box, tmp_path / name)
        return json.loads((tmp_path / name / "evolution.json").read_text())["trials"]

    trials = run("guided", guided)
    assert trials[0]["genome"] == pytest.approx([0.15, 0.85])  # the prior's start
    assert trials[1]["genome"] == pytest.approx([0.5, 0.5])  # the anchor
    box = stored_box(open_storage(tmp_path / "guided"))
    assert box.lower == pytest.approx((0.0, 0.5)) and box.upper == pytest.approx((0.5, 1.0))
    assert box.mean == pytest.approx((0.15, 0.85)) and box.sigma == pytest.approx((0.05, 0.05))
    assert all(0.0 <= t["genome"][0] <= 0.5 and 0.5 <= t["genome"][1] for t in trials)
    off = run("off", guided, opt={"anchor": False})
    assert all(t["genome"] != pytest.approx([0.5, 0.5]) for t in off)
    blind = run("blind", blind_box(["t_mlp", "t_rest"]))
    assert blind[0]["genome"] == pytest.approx([0.5, 0.5])
    assert all(t["genome"] != pytest.approx([0.5, 0.5]) for t in blind[1:])
    clipped = run("clipped", guided, bounds={"t_mlp": [0.0, 0.4]})
    assert clipped[1]["genome"] == pytest.approx([0.4, 0.5])

"""Honest selection: the test split is never read during the search; the winner is chosen
on fitness and measured once on the test split with paired tests; the run folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from darwinmerge.evaluate.backends.transformers_backend import TransformersBackend
from darwinmerge.evaluate.tasks import load_tasks, split_of
from darwinmerge.evolve import api as evolve_api
from darwinmerge.evolve.api import blind_box, run_evolution
from darwinmerge.evolve.config import EvolveConfig
from darwinmerge.evolve.early_stop import EarlyStopRule, fitness_of

from .search_helpers import TwoGeneSpace, config_data, micro_zoo  # noqa: F401


def test_test_split_is_never_read_during_the_search(micro_zoo, monkeypatch, tmp_path):  # noqa: F811
    items = load_tasks(f"zoo:{micro_zoo}", split=None)
    split = {it.prompt: split_of(it.id) for it in items}
    assert len(split) == len(items)  # prompts identify items
    phase = {"name": "search"}
    seen: dict[str, list[str]] = {"search": [], "selection": []}
    original_generate = TransformersBackend.generate

    def spy(self, prompts):
        seen[phase["name"]].extend(prompts)
        return original_generate(self, prompts)

    original_selection = evolve_api.honest_selection

    def selection_spy(*args, **kwargs):
        phase["name"] = "selection"
        return original_selection(*args, **kwargs)

    monkeypatch.setattr(TransformersBackend, "generate", spy)
    monkeypatch.setattr(evolve_api, "honest_selection", selection_spy)
    data = config_data(micro_zoo, trials=5, fitness={"score": "accuracy"})  # generation
    cfg = EvolveConfig.model_validate(data)
    space = TwoGeneSpace(micro_zoo / "father", micro_zoo / "mother")
    result = run_evolution(cfg, space, blind_box(["t_mlp", "t_rest"]), tmp_path / "run")
    search_splits = {split[p] for p in seen["search"]}
    assert seen["search"] and search_splits == {"fitness"}
    assert {split[p] for p in seen["selection"]} == {"test"}
    n_test = sum(s == "test" for s in split.values())
    # 2 parents + top_k = 2 candidates, every test item once each
    assert len(seen["selection"]) == 4 * n_test == 4 * result.selection.test_items

    # the run folder
    run = tmp_path / "run"
    record = json.loads((run / "evolution.json").read_text())
    assert len(record["trials"]) == 5 and record["winner"]["trial"] == result.winner
    for row in record["trials"]:
        assert row["state"] == "complete" and row["items_used"] == 20
        assert len(row["item_correct"]) == 20 and set(row["item_correct"]) <= {"0", "1"}
        assert set(row["fitness"]) == {"code", "knowledge", "logic", "multilingual", "reasoning"}
        assert row["merge_seconds"] > 0 and row["eval_seconds"] > 0
        assert yaml.safe_load(row["recipe"])["method"] == "linear"
        assert row["values"][0] == pytest.approx(np.mean(list(row["fitness"].values())))
    best = max(record["trials"], key=lambda r: (r["values"][0], -r["number"]))
    assert best["number"] == result.winner
    sel = record["selection"]
    assert [c["trial"] for c in sel["candidates"]][0] == result.winner
    win = sel["candidates"][0]
    assert sel["selection_gap"] == pytest.approx(win["fitness"] - win["test"]["overall"]["score"])
    assert set(win["vs"]) == {"father", "mother"}
    assert (run / "winner_recipe.yaml").read_text() == best["recipe"]
    card = (run / "child" / "README.md").read_text()
    assert "## Search" in card and "## Scores (test split)" in card and "Selection gap" in card
    assert (run / "child" / "config.json").is_file()


def test_upper_confidence_bound_formula():
    rule = EarlyStopRule(z=1.96, min_items=2)
    planned = {"a": 10, "b": 10}
    # nothing seen yet: the bound is 1
    assert rule.upper_bound({}, planned, ["a", "b"]) == 1.0
    # a: 0 of 5 right -> Wilson upper 0.4345 at z=1.96; b: all 10 scored, 6 right
    ucb = rule.upper_bound({"a": (0, 5), "b": (6, 10)}, planned, ["a", "b"])
    wilson_hi = (1.96**2 / 10) / (1 + 1.96**2 / 5) + 1.96 / (1 + 1.96**2 / 5) * np.sqrt(
        1.96**2 / 100
    )
    assert ucb == pytest.approx(((0 + wilson_hi * 5) / 10 + 0.6) / 2, rel=1e-9)
    assert ucb == pytest.approx(0.4086, abs=1e-4)
    assert rule.should_stop({"a": (0, 5), "b": (6, 10)}, planned, ["a", "b"], best=0.41)
    assert not rule.should_stop({"a": (0, 5), "b": (6, 10)}, planned, ["a", "b"], best=0.40)
    # too few items of a category: never stops
    assert not rule.should_stop({"a": (0, 1), "b": (0, 10)}, planned, ["a", "b"], best=0.9)
    assert fitness_of({"a": (3, 4), "b": (1, 4)}, ["a", "b"]) == 0.5


def test_continuous_fitness_and_rescoring_read_only_the_fitness_split(
    micro_zoo,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    items = load_tasks(f"zoo:{micro_zoo}", split=None)
    split = {it.prompt: split_of(it.id) for it in items}
    phase = {"name": "search"}
    seen: dict[str, list[str]] = {"search": [], "selection": []}
    original_ll = TransformersBackend.loglikelihood

    def spy(self, requests):
        seen[phase["name"]].extend(p for p, _ in requests if p in split)
        return original_ll(self, requests)

    original_selection = evolve_api.honest_selection

    def selection_spy(*args, **kwargs):
        phase["name"] = "selection"
        return original_selection(*args, **kwargs)

    monkeypatch.setattr(TransformersBackend, "loglikelihood", spy)
    monkeypatch.setattr(evolve_api, "honest_selection", selection_spy)
    cfg = EvolveConfig.model_validate(
        config_data(
            micro_zoo,
            trials=5,
            fitness={"score": "gold_prob"},
            select={"rescore_top": 3, "write_child": False},
        )
    )
    space = TwoGeneSpace(micro_zoo / "father", micro_zoo / "mother")
    result = run_evolution(cfg, space, blind_box(["t_mlp", "t_rest"]), tmp_path / "run")
    assert seen["search"] and {split[p] for p in seen["search"]} == {"fitness"}
    record = json.loads((tmp_path / "run" / "evolution.json").read_text())
    assert record["score"] == "gold_prob"
    for row in record["trials"]:  # the fitness is the macro mean of the gold probability
        assert row["items_used"] == 20
        assert all(0.0 < v < 1.0 for v in row["fitness"].values())
        assert row["values"][0] == pytest.approx(np.mean(list(row["fitness"].values())))
    # the best three re-scored on every fitness item the search did not use
    n_fit = sum(s == "fitness" for s in split.values())
    rescore = record["rescore"]
    assert len(rescore) == 3 and {r["fresh_items"] for r in rescore} == {n_fit - 20}
    best = max(rescore, key=lambda r: r["pooled_fitness"])
    assert result.winner == best["trial"] == record["winner"]["trial"]
    for r in rescore:
        want = (20 * r["search_fitness"] + (n_fit - 20) * r["fresh_fitness"]) / n_fit
        assert r["pooled_fitness"] == pytest.approx(want)
    assert [c["trial"] for c in record["selection"]["candidates"]][0] == result.winner

"""The search-suite benchmark: its selection and statistics on synthetic records, and its
small mode end to end (micro zoo, one problem, every arm)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks.scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


def _module() -> Any:
    return load_benchmark("search_suite")


def _rec(number: int, value: float | None, state: str = "complete") -> dict:
    return {
        "number": number,
        "state": state,
        "values": None if value is None else [value],
        "recipe": f"r{number}",
    }


def test_anytime_returns_the_best_fitness_seen_within_each_budget() -> None:
    ss = _module()
    records = [
        _rec(0, 0.5),
        _rec(1, 0.7),
        _rec(2, 0.9, state="pruned"),  # a stopped candidate is never returned
        _rec(3, 0.7),  # a tie goes to the earlier trial
        _rec(4, 0.8),
        _rec(5, None, state="fail"),
    ]
    picks = ss.anytime(records, [1, 2, 4, 5, 40])
    assert {k: p["number"] for k, p in picks.items()} == {1: 0, 2: 1, 4: 1, 5: 4, 40: 4}
    assert ss.anytime([_rec(0, None, "fail")], [1]) == {}


def test_interval_is_the_t_interval_of_the_mean() -> None:
    ss = _module()
    low, high = ss.interval([0.6, 0.7, 0.8])
    # mean 0.7, sd 0.1, t(2) = 4.30: 0.7 +- 4.30 * 0.1 / sqrt(3)
    assert low == pytest.approx(0.7 - 0.24826, rel=1e-3)
    assert high == pytest.approx(0.7 + 0.24826, rel=1e-3)
    assert ss.interval([0.5]) == (0.5, 0.5)


def _row(name: str, hard: bool, guided: dict, blind: dict, headroom: float, p: float) -> dict:
    def arm(meds: dict) -> dict:
        return {
            "budgets": {k: {"median": v, "low": v, "high": v} for k, v in meds.items()},
            "gain_over_start": 0.02,
            "pooled": {"wins": 10, "losses": 2, "p": p},
        }

    return {
        "problem": name,
        "hard": hard,
        "headroom": headroom,
        "best_reference": 0.6,
        "arms": {"guided": arm(guided), "blind": arm(blind)},
    }


def test_targets_read_the_rows() -> None:
    ss = _module()
    good = {5: 0.62, 10: 0.66, 20: 0.67, 40: 0.68}
    blind = {5: 0.60, 10: 0.61, 20: 0.63, 40: 0.65}
    rows = [_row(f"p{i}", False, good, blind, 0.1, 0.01) for i in range(4)]
    rows.append(_row("hard", True, blind, good, 0.0, 0.5))  # guided below blind by 0.03
    v = ss.targets(rows, [5, 10, 20, 40])
    keys = [k for k in v if not k.startswith("_")]
    assert v[keys[0]] is True  # 0.66 at 10 >= 0.65 at 40 on every open problem
    assert v[keys[1]] is True and len(v["_beats_start"]) == 4
    assert v[keys[2]] is True  # 0.68 - 0.6 >= 0.1 / 2 on the four open problems
    assert v[keys[3]] is False  # the hard problem: 0.65 < 0.68 - 0.01
    rows[0]["arms"]["guided"]["budgets"][10]["median"] = 0.64
    assert ss.targets(rows, [5, 10, 20, 40])[keys[0]] is False


def test_small_mode_runs_every_arm(tmp_path: Path) -> None:
    out = tmp_path / "ss"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "search_suite.py"),
            "--small",
            "--zoo",
            str(tmp_path / "zoo"),
            "--suite",
            str(tmp_path / "suite"),
            "--out",
            str(out),
            "--problems",
            "golden_layer",
            "--budgets",
            "1,2",
            "--seeds",
            "2",
            "--extra-seeds",
            "1",
            "--subset",
            "1",
            "--rescore-top",
            "2",
            "--rescore-items",
            "1",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "search_suite.json").read_text())
    (row,) = data["rows"]
    assert row["problem"] == "golden_layer" and row["hard"] is False
    searched = {"blind", "guided", "trusted", "random", "tpe", "nsga2"}
    assert set(row["arms"]) == {"prior"} | searched | {f"{a}+rescore" for a in searched}
    for a in searched:  # the re-scored choice is one of the first k trials of the same runs
        for plain, again in zip(
            row["arms"][a]["runs"], row["arms"][f"{a}+rescore"]["runs"], strict=True
        ):
            assert again["seed"] == plain["seed"] and again["start"] == plain["start"]
            assert all(int(k) > t for k, t in again["trial"].items())
    trusted = json.loads((out / "golden_layer" / "trusted-0" / "evolution.json").read_text())
    assert all("mri_trust" in t["genes"] for t in trusted["trials"])  # the trust gene searched
    assert len(row["arms"]["guided"]["runs"]) == 2 and len(row["arms"]["tpe"]["runs"]) == 1
    for run in row["arms"]["blind"]["runs"]:
        assert set(run["test"]) == {"1", "2"}  # JSON keys
        assert run["trial"]["1"] == 0 and run["trial"]["2"] in (0, 1)
        assert 0.0 <= run["start"] <= 1.0
    assert row["ceiling"] >= row["percat_ceiling"] >= max(row["a"], row["b"]) - 1e-12
    assert row["ceiling"] >= row["best_child"] >= row["linear"]
    runs = [r for arm in row["arms"].values() for r in arm["runs"]]
    returned = [t for r in runs for t in r["test"].values()] + [
        r["start"] for r in runs if "start" in r
    ]
    assert row["best_child"] == pytest.approx(max([*returned, row["a"], row["b"], row["linear"]]))
    assert row["headroom"] == pytest.approx(row["ceiling"] - row["best_reference"])
    assert (out / "curves_golden_layer.png").stat().st_size > 1000
    assert "| golden_layer | guided |" in (out / "search_suite.md").read_text()
    # the search never read the test split: its tasks hold fitness items only
    import darwinmerge.zoo.tasks  # noqa: F401
    from darwinmerge.evaluate.tasks import load_tasks

    searched = load_tasks(f"zoo:{out / 'fitness_tasks'}", split=None)
    assert searched and load_tasks(f"zoo:{out / 'fitness_tasks'}", split="test") == []
    # the score-agreement benchmark reads this run back: its candidates are the row's
    agree = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "score_agreement.py")]
        + ["--zoo", str(tmp_path / "zoo"), "--suite", str(tmp_path / "suite")]
        + ["--runs", str(out), "--halves", "3", "--out", str(tmp_path / "agree.json")],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert agree.returncode == 0, agree.stderr[-3000:]
    (arow,) = json.loads((tmp_path / "agree.json").read_text())["rows"]
    assert arow["problem"] == "golden_layer" and arow["candidates"] == len(arow["test"]) >= 3
    assert row["a"] in arow["test"] and row["linear"] in arow["test"]
    assert set(arow["scores"]) >= {"gold_prob", "greedy", "gold_margin@1"}
    assert "| golden_layer |" in agree.stdout


def test_rescorer_prefers_the_candidate_that_holds_up_on_fresh_items() -> None:
    ss = _module()
    fresh = {"lucky": (0.50, 100), "solid": (0.70, 100), "third": (0.90, 100)}

    class Worker:
        calls: list[str] = []

        def fitness(self, recipe: str, items: object) -> tuple[float, int]:
            self.calls.append(recipe)
            return fresh[recipe]

    r = ss.Rescorer.__new__(ss.Rescorer)
    r.worker, r.fresh, r.top, r.cache = Worker(), ["x"], 2, {}
    recs = [
        {"number": 0, "state": "complete", "values": [0.80], "recipe": "lucky", "items_used": 100},
        {"number": 1, "state": "complete", "values": [0.75], "recipe": "solid", "items_used": 100},
        {"number": 2, "state": "complete", "values": [0.80], "recipe": "lucky", "items_used": 100},
        {"number": 3, "state": "complete", "values": [0.60], "recipe": "third", "items_used": 100},
        {"number": 4, "state": "fail", "values": [], "recipe": "", "items_used": 0},
    ]
    # pooled: lucky (0.80 + 0.50) / 2 = 0.65 < solid (0.75 + 0.70) / 2 = 0.725; "third"
    # is outside the top 2 and never re-scored
    assert r.pick(recs, 5)["recipe"] == "solid"
    assert Worker.calls == ["lucky", "solid"]
    assert r.pick(recs, 1)["recipe"] == "lucky"  # only trial 0 is in the first 1
    assert Worker.calls == ["lucky", "solid"]  # cached


def test_race_mode_config_and_its_cost(tmp_path: Path) -> None:
    ss = _module()
    args = ss.parse(["--race", "50", "--subset", "0", "--start-first"])
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    paths = {"a": tmp_path / "a", "b": tmp_path / "b", "base": None}
    cfg = ss._config(args, paths, "zoo:x", "blind", 3, tmp_path, 40, args.subset)
    # the whole fitness split, scored in chunks of 50, every candidate raced
    assert cfg.fitness.subset == 1.0 and cfg.fitness.chunk_size == 50
    assert cfg.early_stop.enabled and cfg.optimizer.seed == 3 and cfg.optimizer.start_first
    plain = ss._config(ss.parse([]), paths, "zoo:x", "blind", 0, tmp_path, 40, 20)
    assert plain.fitness.subset == 20 and not plain.early_stop.enabled
    assert plain.optimizer.start_first  # the run's default
    off = ss._config(ss.parse(["--no-start-first"]), paths, "zoo:x", "blind", 0, tmp_path, 40, 20)
    assert not off.optimizer.start_first
    # another race setting is another row (the cached row is not reused)
    assert ss.settings_key(args) != ss.settings_key(ss.parse(["--subset", "0"]))
    # what the fitness cost: items per evaluation over the first k trials, a cached
    # genome free, a failed one not counted
    recs = [
        {"number": 0, "state": "complete", "items_used": 730},
        {"number": 1, "state": "pruned", "items_used": 100},
        {"number": 2, "state": "complete", "items_used": 0, "cached_from": 0},
        {"number": 3, "state": "fail", "items_used": 0},
        {"number": 4, "state": "pruned", "items_used": 150},
    ]
    assert ss.items_per_eval(recs, 2) == pytest.approx(415.0)
    assert ss.items_per_eval(recs, 5) == pytest.approx((730 + 100 + 150) / 3)


def test_a_cached_row_reads_back_as_a_fresh_one() -> None:
    """row.json holds the budgets as JSON string keys; read back, the targets, table and
    anytime runs are those of the fresh row (a resumed benchmark once printed '-' and
    judged every target on NaN)."""
    ss = _module()
    good = {5: 0.62, 10: 0.66, 20: 0.67, 40: 0.68}
    blind = {5: 0.60, 10: 0.61, 20: 0.63, 40: 0.65}
    rows = [_row(f"p{i}", False, good, blind, 0.1, 0.01) for i in range(4)]
    for r in rows:
        r["arms"]["guided"]["runs"] = [
            {"seed": 0, "test": dict(good), "fitness": dict(good), "trial": {5: 1, 40: 9}}
        ]
        r["arms"]["blind"]["runs"] = []
        r.update(a=0.5, b=0.6, linear=0.55, ceiling=0.7, percat_ceiling=0.7)
        r.update(long_search=None, best_child=0.68)
    back = [ss.row_from_json(json.loads(json.dumps(r))) for r in rows]
    assert back == rows
    budgets = [5, 10, 20, 40]
    assert ss.targets(back, budgets) == ss.targets(rows, budgets)
    assert all(v is True for k, v in ss.targets(back, budgets).items() if not k.startswith("_"))
    text = ss.markdown(back, budgets, ss.targets(back, budgets))
    assert "| p0 | guided | 0.620 [0.620, 0.620] | 0.660" in text


def test_score_agreement_scores_and_their_rank_agreement() -> None:
    import numpy as np

    sa = load_benchmark("score_agreement")
    s = sa.item_scores([-0.1, -3.0], [2.0, -0.5])
    assert s["gold_prob"] == pytest.approx([math.exp(-0.1), math.exp(-3.0)])
    assert s["greedy"].tolist() == [1.0, 0.0]
    assert s["gold_margin@1"] == pytest.approx([1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(0.5))])
    assert s["gold_margin@0.5"][0] > s["gold_margin@1"][0]  # sharper: nearer 1 when right
    # three candidates, two categories: macro means are hand-computable
    cats = ["x", "x", "y", "y"]
    values = np.array([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    assert sa.macro(values, cats).tolist() == pytest.approx([0.75, 0.25, 1.0])
    agree = sa.agreement(values, cats, test=[0.5, 0.2, 0.9], halves=0, seed=0)
    assert agree["spearman"] == pytest.approx(1.0)
    # fitness ranks 2, 1, 3 against test ranks 2, 3, 1: 1 - 6 * (0 + 4 + 4) / (3 * 8) = -1
    reversed_ = sa.agreement(values, cats, test=[0.5, 0.9, 0.2], halves=4, seed=0)
    assert reversed_["spearman"] == pytest.approx(-1.0)
    assert -1.0 <= reversed_["reliability"] <= 1.0

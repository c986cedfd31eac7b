"""The health benchmark's ``search`` kind: which children it takes from a search-suite
output folder, its bookkeeping on hand-written rows, and one run end to end on a micro
zoo and micro suite (a tiny search-suite folder written here, as the search writes it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.benchmarks.scripts import load_benchmark


def _module() -> Any:
    return load_benchmark("health_validation")


def _lerp(a: Path, b: Path, t: float) -> str:
    return yaml.safe_dump(
        {
            "method": "trimmed_lerp",
            "parents": [{"name": "a", "path": str(a)}, {"name": "b", "path": str(b)}],
            "parameters": {"t": t},
        }
    )


def _linear(a: Path, b: Path, wa: float, wb: float) -> str:
    return yaml.safe_dump(
        {
            "method": "linear",
            "parents": [
                {"name": "a", "path": str(a), "parameters": {"weight": wa}},
                {"name": "b", "path": str(b), "parameters": {"weight": wb}},
            ],
        }
    )


def _trial(number: int, value: float | None, recipe: str, state: str = "complete") -> dict:
    return {
        "number": number,
        "state": state,
        "values": None if value is None else [value],
        "recipe": recipe,
    }


def _search_output(out: Path, a: Path, b: Path, problem: str = "opposite_layers") -> Path:
    """``out/<problem>/<arm>-<seed>/evolution.json`` as benchmarks/search_suite.py leaves
    it: blind-0 (best trial 2, worst trial 1: an overshoot past b), guided-0 (best trial 1,
    no worst: its only trial after the start is the one it returns), random-0 still running
    (no evolution.json), mri/ (no run)."""
    runs = {
        "blind-0": [
            _trial(0, 0.5, _lerp(a, b, 0.5)),
            _trial(1, 0.1, _linear(a, b, -2.0, 3.0)),
            _trial(2, 0.6, _lerp(a, b, 0.3)),
            _trial(3, 0.9, _lerp(a, b, 0.9), state="pruned"),  # never returned
        ],
        "guided-0": [_trial(0, 0.4, _lerp(a, b, 0.5)), _trial(1, 0.45, _lerp(a, b, 0.7))],
    }
    for name, trials in runs.items():
        folder = out / problem / name
        folder.mkdir(parents=True)
        (folder / "evolution.json").write_text(json.dumps({"trials": trials}))
    (out / problem / "random-0").mkdir()
    (out / problem / "mri").mkdir()
    (out / "fitness_tasks" / "tasks").mkdir(parents=True, exist_ok=True)
    return out


def test_search_picks_take_the_returned_child_and_the_wide_arms_worst(tmp_path: Path) -> None:
    hv = _module()
    out = _search_output(tmp_path / "ss", Path("/m/a"), Path("/m/b"))
    _search_output(tmp_path / "ss", Path("/m/a"), Path("/m/b"), problem="deep")
    picks = hv.search_picks(out)
    got = {(p["problem"], p["arm"], p["seed"], p["kind"], p["trial"]) for p in picks}
    assert got == {
        (prob, arm, 0, kind, trial)
        for prob in ("opposite_layers", "deep")
        for arm, kind, trial in (
            ("blind", "search", 2),
            ("blind", "search-worst", 1),
            ("guided", "search", 1),
        )
    }
    assert {p["fitness"] for p in picks if p["kind"] == "search-worst"} == {0.1}
    assert len(hv.search_picks(out, worst=False)) == 4
    # a cap keeps every problem: round robin over (folder, problem)
    capped = hv.interleave(picks, 2)
    assert {p["problem"] for p in capped} == {"opposite_layers", "deep"}
    assert all(p["arm"] == "blind" and p["kind"] == "search" for p in capped)
    assert len(hv.interleave(picks, None)) == 6


def _journal(folder: Path, trials: int) -> None:
    """An Optuna journal as ``darwin evolve`` leaves it: the start enqueued, then searched."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    from darwinmerge.evolve.study import STUDY_FILE, STUDY_NAME

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(folder / STUDY_FILE)))
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage)
    study.enqueue_trial({"x": 0.5})
    dist = optuna.distributions.FloatDistribution(0.0, 1.0)
    for _ in range(trials):
        trial = study.ask({"x": dist})
        study.tell(trial, trial.params["x"])


def test_search_worst_is_never_the_runs_start(tmp_path: Path) -> None:
    """The start (enqueued first, often the worst trial: the 50/50 merge of a good and a bad
    parent) is not a child the search made; nor is a later trial answered with its genome
    from the cache. Where ``start_first`` was off, trial 0 is a searched child."""
    hv = _module()
    a, b = Path("/m/a"), Path("/m/b")
    out = tmp_path / "ss"

    def run(name: str, trials: list[dict]) -> Path:
        folder = out / "golden_layer" / name
        folder.mkdir(parents=True)
        (folder / "evolution.json").write_text(json.dumps({"trials": trials}))
        return folder

    def t(number: int, value: float, x: float, **extra: Any) -> dict:
        return {**_trial(number, value, _lerp(a, b, x)), "genome": [x], **extra}

    start, copy = t(0, 0.05, 0.5), t(3, 0.05, 0.5, cached_from=0)
    journaled = [start, t(1, 0.3, 0.1), t(2, 0.6, 0.8), copy, t(4, 0.2, 0.9)]
    _journal(run("blind-0", journaled), trials=len(journaled))
    run("blind-1", [t(0, 0.05, 0.5), t(1, 0.3, 0.1), t(2, 0.6, 0.8)])  # no journal, no config
    off = run("blind-2", [t(0, 0.05, 0.5), t(1, 0.3, 0.1), t(2, 0.6, 0.8)])
    (off / "config.yaml").write_text(yaml.safe_dump({"optimizer": {"start_first": False}}))
    run("guided-0", [t(0, 0.05, 0.5), t(1, 0.1, 0.45), t(2, 0.6, 0.8), t(3, 0.3, 0.7)])

    from darwinmerge.evolve.study import STUDY_FILE, STUDY_NAME

    journal = out / "golden_layer" / "blind-0" / STUDY_FILE
    assert hv._enqueued(journal, STUDY_NAME) == {0}  # Optuna's own record of the enqueued trial
    assert hv._enqueued(journal, "no-such-study") is None
    assert hv.start_trials(out / "golden_layer" / "blind-0", journaled) == {0, 3}
    assert hv.start_trials(off, [t(0, 0.05, 0.5)]) == set()
    worst = {
        (p["arm"], p["seed"]): p["trial"]
        for p in hv.search_picks(out)
        if p["kind"] == "search-worst"
    }
    # the worst searched trial: 4 (0.2), not the start 0 or its copy 3 (0.05); guided's too
    assert worst == {("blind", 0): 4, ("blind", 1): 1, ("blind", 2): 0, ("guided", 0): 1}


def _row(kind: str, test: float, healthy: bool, **extra: Any) -> dict:
    row = {
        "zoo": "search",
        "kind": kind,
        "base": "linear",
        "layer": None,
        "test": test,
        "base_test": 0.70,
        "a": 0.40,
        "b": 0.62,
        "linear": 0.70,
        "problem": "p",
        "healthy": healthy,
        "localized": [],
    }
    return {**row, **extra}


def test_search_bookkeeping() -> None:
    hv = _module()
    rows = [
        _row("search", 0.69, False),  # within 0.02: a false alarm, not a detection
        _row("search", 0.90, True),  # above its reference: calm
        _row("search", 0.66, False),  # loses 0.04: neither calm nor damaged
        # damaged, first flag = the best revert, the repair recovers 0.12 of 0.20
        _row("search-worst", 0.50, False, localized=[2, 0], best_revert=2)
        | {"repaired": 0.62, "random": 0.48},
        # damaged, first flag elsewhere than the best revert; its repair still pairs
        _row("search-worst", 0.40, False, localized=[1], best_revert=3)
        | {"repaired": 0.41, "random": 0.45},
        _row("search-worst", 0.58, True),  # damaged, called healthy: a detection miss
        # a hand-made child one layer off its base: calm only within 0.02 either way
        _row("overshoot2", 0.75, True, layer=1),
    ]
    s = hv.summarise(rows)
    assert s["search"]["children"] == 3
    assert (s["search"]["damaged"], s["search"]["calm"], s["search"]["alarms"]) == (0, 2, 1)
    w = s["search-worst"]
    assert (w["damaged"], w["detected"], w["localized"], w["repaired"]) == (3, 2, 1, 1)
    assert (w["calm"], w["alarms"], w["paired"], w["wins"], w["losses"]) == (0, 0, 2, 1, 1)
    assert s["overshoot2"]["calm"] == 0 and s["overshoot2"]["damaged"] == 0
    a = s["all"]
    assert a["children"] == 7 and a["damaged"] == 3 and a["calm"] == 2 and a["alarms"] == 1
    assert list(s) == ["overshoot2", "search", "search-worst", "all"]
    # against the better parent (0.62) the first three are calm, the 0.58 child is not
    # damaged, and the 0.50 child's repair recovers all of its 0.12
    bp = hv.summarise(hv.better_parent(rows))["all"]
    assert (bp["children"], bp["calm"], bp["damaged"], bp["repaired"]) == (6, 3, 2, 1)


@pytest.fixture(scope="module")
def micro_search(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from darwinmerge.zoo.build import build_zoo, micro_config
    from darwinmerge.zoo.problems import build_suite, micro_suite_config, problem_parents

    root = tmp_path_factory.mktemp("hv-search")
    zoo, suite = root / "zoo", root / "suite"
    build_zoo(zoo, micro_config(0))
    build_suite(suite, zoo, micro_suite_config(), only=("opposite_layers",))
    paths = problem_parents(suite, "opposite_layers")
    out = _search_output(root / "ss", paths["a"], paths["b"])  # type: ignore[arg-type]
    return zoo, out


def test_search_kind_end_to_end_on_the_micro_suite(
    micro_search: tuple[Path, Path], tmp_path: Path
) -> None:
    hv = _module()
    zoo, out = micro_search
    report = tmp_path / "run.json"
    summary = hv.main(
        ["--zoo", str(zoo), "--kinds", "none", "--search-suite", str(out), "--n-test", "3",
         "--max-children", "2", "--json", str(report)]
    )  # fmt: skip
    rows = json.loads(report.read_text())["rows"]
    partial = json.loads((tmp_path / "run.json.partial-search").read_text())["rows"]
    assert [(r["kind"], r["trial"], r["test"]) for r in partial] == [
        (r["kind"], r["trial"], r["test"]) for r in rows
    ]  # kept after every child, so a run cut short keeps what it measured
    # the cap keeps the first seed of the first arm: its returned child and worst trial
    assert sorted((r["arm"], r["kind"], r["trial"]) for r in rows) == [
        ("blind", "search", 2),
        ("blind", "search-worst", 1),
    ]
    for r in rows:
        refs = {k: r[k] for k in ("a", "b", "linear")}
        assert all(0.0 <= v <= 1.0 for v in [*refs.values(), r["test"]])
        assert r["base_test"] == r["reference"] == max(refs.values()) == refs[r["base"]]
        assert r["layer"] is None and r["problem"] == "opposite_layers"
        L = len(r["recovery"]["span"])
        if hv.is_damaged(r):  # every damaged search child has its best revert measured
            assert len(r["reverts"]) == L and r["best_revert"] == r["reverts"].index(
                max(r["reverts"])
            )
        if r["localized"]:
            assert 0 <= r["localized"][0] < L
    for kind in ("search", "search-worst", "all"):
        s = summary[kind]
        rs = rows if kind == "all" else [r for r in rows if r["kind"] == kind]
        assert s["children"] == len(rs)
        assert s["damaged"] == sum(r["base_test"] - r["test"] >= 0.05 for r in rs)
        assert s["calm"] == sum(r["base_test"] - r["test"] <= 0.02 for r in rs)
        assert s["damaged"] + s["calm"] <= s["children"]
        assert s["alarms"] == sum(
            not r["healthy"] for r in rs if r["base_test"] - r["test"] <= 0.02
        )
        assert s["localized"] <= s["detected"] <= s["damaged"]
        assert s["repaired"] <= s["localized"]
        assert (
            s["paired"]
            == sum("repaired" in r for r in rs)
            == s["wins"]
            + s["losses"]
            + sum(abs(r["repaired"] - r["random"]) <= 1e-12 for r in rs if "repaired" in r)
        )
    assert summary["all"]["children"] == summary["search"]["children"] + 1 == 2


@pytest.mark.slow
def test_search_kind_damaged_path_on_the_micro_suite(
    micro_search: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The micro zoo scores ~0 everywhere, so no child loses 0.05 on test there: with the
    loss threshold lowered below any loss, the one child taken runs the damaged path (its
    single-layer reverts measured on test, the best one named, the counts kept)."""
    hv = _module()
    monkeypatch.setattr(hv, "LOSS_MIN", -1.0)
    zoo, out = micro_search
    report = tmp_path / "run.json"
    summary = hv.main(
        ["--zoo", str(zoo), "--kinds", "none", "--search-suite", str(out), "--n-test", "2",
         "--max-children", "1", "--search-kinds", "search", "--json", str(report)]
    )  # fmt: skip
    (row,) = json.loads(report.read_text())["rows"]
    assert (row["arm"], row["kind"], row["trial"]) == ("blind", "search", 2)
    L = len(row["recovery"]["span"])
    assert len(row["reverts"]) == L and row["best_revert"] == row["reverts"].index(
        max(row["reverts"])
    )
    s = summary["search"]
    assert s["children"] == s["damaged"] == 1
    assert s["detected"] == int(not row["healthy"])
    hit = bool(row["localized"]) and row["localized"][0] == row["best_revert"]
    assert s["localized"] == int(hit)
    assert s["repaired"] <= s["localized"] and s["paired"] == int("repaired" in row)


def test_relative_revive_scans_are_found_under_the_search_folders_ancestors(
    tmp_path: Path,
) -> None:
    """The search writes ``revive.scan`` relative to where it ran (``runs/<out>/...``)."""
    from darwinmerge.merge import Recipe

    hv = _module()
    rel = "runs/hv-rooted-ss/deep/mri/scan_b.json"
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_text("{}")
    data = yaml.safe_load(_lerp(Path("/m/a"), Path("/m/b"), 0.5))
    data["revive"] = {"source": "a", "into": "b", "scan": rel, "donor_scan": {0: [1]}}
    recipe = Recipe.parse(data)
    rooted = hv._rooted(recipe, tmp_path / "runs" / "hv-rooted-ss")
    assert rooted.revive.scan == str(tmp_path / rel)
    assert rooted.revive.donor_scan == recipe.revive.donor_scan  # inline: left as it is
    assert hv._rooted(recipe, Path("/nowhere/ss")) == recipe  # not found: unchanged


def test_routing_flags_count_with_loss_evidence_when_margins_are_recomputed() -> None:
    hv = _module()
    row = {"routing": False, "routing_layers": [1], "worse": []}
    assert not hv.routing_problem(row, [])  # an expert died at L1, nothing else
    assert hv.routing_problem(row, [1])  # L1 localized under the new margins
    assert not hv.routing_problem(row, [3])  # another layer localized
    assert hv.routing_problem({**row, "worse": ["CODE"]}, [])
    assert not hv.routing_problem({**row, "routing_layers": [], "worse": ["CODE"]}, [])
    assert hv.routing_problem({"routing": True, "worse": []}, [])  # a row stored before


# ------------------------------------------------------------- leave-one-seed-out calibration
def _cal_row(zoo: str, loss: float, span0: float = 0.0, a1: float = 0.0) -> dict:
    """A hand-made child of a two-layer model whose stored localization ``refit`` reads:
    layer 0 leaves the parents' span (experts at t = 2; the damaged layer when ``loss`` is
    large) and its span candidate recovers ``span0``; parent A's layer 1 recovers ``a1``."""
    damaged_or_near = span0 > 0.0
    return {
        "zoo": zoo,
        "kind": "overshoot2" if damaged_or_near else "healthy",
        "base": "U",
        "layer": 0 if damaged_or_near else None,
        "test": 0.80 - loss,
        "base_test": 0.80,
        "healthy": True,
        "localized": [],
        "worse": [],
        "routing": False,
        "routing_layers": [],
        "recovery": {"span": [span0, 0.0], "A": [0.0, a1], "B": [0.0, 0.0]},
        "loc": {
            "num_layers": 2,
            "span_t": {"experts": [2.0 if damaged_or_near else 0.5, 0.5]},
            "span_dist": {"experts": [0.0, 0.0]},
            "t_ref": {"experts": 0.5},
            "deviating": [["experts"] if damaged_or_near else [], []],
        },
    }


def _cal_seed(zoo: str, damaged_span: float, calm_span: float) -> list[dict]:
    """10 damaged children (-0.10 on test) whose span candidate recovers ``damaged_span``
    at the damaged layer, 10 calm ones (-0.01) leaving the span at layer 0 that recovers
    ``calm_span``, and 2 undamaged ones whose parent-A layer 1 recovers 0.035."""
    return (
        [_cal_row(zoo, 0.10, span0=damaged_span) for _ in range(10)]
        + [_cal_row(zoo, 0.01, span0=calm_span) for _ in range(10)]
        + [_cal_row(zoo, 0.0, a1=0.035) for _ in range(2)]
    )


def test_leave_one_seed_out_picks_each_fold_on_the_other_seed_only() -> None:
    """Seed s0 alone asks for (0.04, 0.02): 0.01 flags its calm children (span 0.015), 0.03
    misses its damage (span 0.025), margin 0.03 flags the two undamaged (A 0.035). Seed s1
    alone asks for (0.04, 0.03) (calm 0.025, damage 0.035). Each held-out seed is judged
    under the other's choice, which is wrong for it in a known way."""
    hv = _module()
    rows = _cal_seed("s0", damaged_span=0.025, calm_span=0.015) + _cal_seed(
        "s1", damaged_span=0.035, calm_span=0.025
    )
    assert hv.grid_counts(rows[:22], 0.04, 0.02) == {
        "alarms": 0, "calm": 12, "localized": 10, "damaged": 10
    }  # fmt: skip
    assert hv.grid_counts(rows[:22], 0.03, 0.02)["alarms"] == 2
    assert hv.grid_counts(rows[:22], 0.04, 0.01)["alarms"] == 10
    assert hv.grid_counts(rows[:22], 0.04, 0.03)["localized"] == 0
    grid = {"margins": (0.03, 0.04), "dev_margins": (0.01, 0.02, 0.03)}
    cal = hv.leave_one_seed_out(rows, (0.04, 0.01), **grid)
    f0, f1 = cal["folds"]
    assert (f0["held_out"], f0["margin"], f0["deviation_margin"]) == ("s0", 0.04, 0.03)
    assert (f1["held_out"], f1["margin"], f1["deviation_margin"]) == ("s1", 0.04, 0.02)
    # s0 under s1's choice misses every damaged child and raises no alarm; s1 under s0's
    # choice localizes all its damage and flags its 10 calm children
    s0, s1 = f0["summary"], f1["summary"]
    assert (s0["damaged"], s0["detected"], s0["localized"], s0["alarms"]) == (10, 0, 0, 0)
    assert (s1["damaged"], s1["detected"], s1["localized"], s1["alarms"]) == (10, 10, 10, 10)
    assert (s1["calm"], s1["repaired"]) == (12, 0)  # no repair measured for a new first flag
    p = cal["pooled"]
    assert (p["damaged"], p["localized"], p["calm"], p["alarms"]) == (20, 10, 24, 10)
    # on every row no cell meets both targets: the fewest alarms among those localizing 80 %
    assert (cal["all"]["margin"], cal["all"]["deviation_margin"]) == (0.04, 0.02)
    assert "no cell meets both targets" in cal["all"]["why"]
    with pytest.raises(SystemExit):
        hv.leave_one_seed_out(rows[:22], (0.04, 0.01), **grid)  # one seed: no fold


def _cells(**counts: tuple[int, int, int, int]) -> dict:
    """cells keyed (margin, deviation margin) from 'm_dm' names: (alarms, calm, hits, damaged)."""
    out = {}
    for key, (a, c, h, d) in counts.items():
        m, dm = (float(x) for x in key.split("_"))
        out[(m, dm)] = {"alarms": a, "calm": c, "localized": h, "damaged": d}
    return out


def test_select_margins_rules() -> None:
    hv = _module()
    cells = _cells(
        **{
            "0.04_0.01": (3, 20, 18, 20),  # the defaults: 15 % false alarms
            "0.04_0.015": (2, 20, 17, 20),  # both targets met, nearest the defaults
            "0.04_0.025": (0, 20, 16, 20),  # both met, fewest alarms, farther
            "0.03_0.015": (2, 20, 18, 20),  # both met, more localized, but farther
            "0.05_0.05": (0, 20, 10, 20),  # no alarm, localizes 50 %
        }
    )
    # |0.03/0.04 - 1| + |0.015/0.01 - 1| = 0.75 > 0.5
    assert hv.select_margins(cells, (0.04, 0.01))[0] == (0.04, 0.015)
    assert hv.select_margins(cells, (0.04, 0.01), "fewest-alarms")[0] == (0.04, 0.025)
    # the defaults themselves are kept when they meet both targets
    ok = {**cells, (0.04, 0.01): {"alarms": 2, "calm": 20, "localized": 18, "damaged": 20}}
    assert hv.select_margins(ok, (0.04, 0.01))[0] == (0.04, 0.01)
    # nothing meets both: fewest alarms with localization >= 80 %, then the most localized
    none_both = _cells(**{"0.04_0.01": (5, 20, 18, 20), "0.04_0.02": (4, 20, 16, 20),
                          "0.05_0.02": (4, 20, 17, 20), "0.05_0.05": (0, 20, 10, 20)})  # fmt: skip
    (m, dm), why = hv.select_margins(none_both, (0.04, 0.01))
    assert (m, dm) == (0.05, 0.02) and "no cell meets both" in why
    # nothing localizes 80 %: the most localized, then the fewest alarms
    weak = _cells(**{"0.04_0.01": (5, 20, 15, 20), "0.05_0.01": (1, 20, 15, 20),
                     "0.05_0.05": (0, 20, 10, 20)})  # fmt: skip
    assert hv.select_margins(weak, (0.04, 0.01)) == (
        (0.05, 0.01),
        "no cell localizes 80%: the most localized",
    )
    with pytest.raises(ValueError, match="known: targets, fewest-alarms"):
        hv.select_margins(cells, (0.04, 0.01), "best")

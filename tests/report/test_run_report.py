"""The run report's info objects, on a run folder written by hand (no training)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from darwinmerge.health import health_check
from darwinmerge.merge.recipe import Recipe, resolve_router, resolve_schedule
from darwinmerge.mri import compare_scans
from darwinmerge.mri.weights import WeightScan
from darwinmerge.report import (
    SECTIONS,
    BarsInfo,
    HeatmapInfo,
    LinesInfo,
    RowInfo,
    TableInfo,
    TextInfo,
    evolution_curve,
)
from darwinmerge.report.evolution_section import CURVE_TITLE
from darwinmerge.run.report import load_run_files, run_report_sections, write_run_report

from ..health.scans import MID, A, B, make_scan

L = 4
CATS = ["REASONING", "CODE"]
COMPONENTS = ["attn", "norm", "router", "experts"]
# swap advantage (positive: the father's layer is the better one)
SWAP_ADV = np.array([[0.01, -0.02, 0.15, 0.0], [-0.20, 0.05, 0.0, 0.01]])
# the mother's utilisation: expert 2 of layer 1 and expert 0 of layer 3 are dead
UTIL_B = np.ones((L, 4))
UTIL_B[1, 2] = 0.0
UTIL_B[3, 0] = 0.01
# trial records: (state, fitness, REASONING, CODE)
TRIALS = [
    ("complete", 0.40, 0.45, 0.35),
    ("complete", 0.55, 0.60, 0.50),
    ("pruned", 0.20, 0.20, None),
    ("fail", None, None, None),
    ("complete", 0.50, 0.55, 0.45),
    ("complete", 0.62, 0.64, 0.60),
    ("pruned", 0.30, 0.35, 0.25),
    ("complete", 0.58, 0.60, 0.56),
]
WINNER = 5


def seed_recipe(run: Path, blocks: list[tuple[int, int, float, str]], revive: bool) -> Recipe:
    """A recipe shaped as the seed space decodes it: per block (first, last, t, router)."""
    rules: list[dict[str, Any]] = []
    router = []
    for first, last, t, source in blocks:
        span = [first, last]
        rules.append({"component": ["attention"], "layers": span, "value": min(t + 0.1, 1.0)})
        rules.append({"component": ["mlp", "router"], "layers": span, "value": t})
        rules.append({"layers": span, "value": t})
        router.append({"layers": span, "source": source})
    rules.append({"value": 0.5})
    data: dict[str, Any] = {
        "parents": [
            {"name": "zf", "path": "/p/father", "parameters": {"density": 0.9}},
            {"name": "zm", "path": "/p/mother", "parameters": {"density": 0.8}},
        ],
        "method": "trimmed_lerp",
        "parameters": {"t": rules},
        "router": router,
    }
    if revive:
        data["revive"] = {
            "source": "zf",
            "into": "zm",
            "scan": str(run / "mri" / "scan_b.json"),
            "donor_scan": str(run / "mri" / "scan_a.json"),
            "threshold": 0.05,
        }
        data["transplants"] = [{"layer": 0, "expert": 3, "source": "zm"}]
    return Recipe.parse(data)


WINNER_BLOCKS = [(0, 1, 0.3, "zf"), (2, 3, 0.7, "merged")]
START_BLOCKS = [(0, 3, 0.5, "merged")]


def final_scores() -> dict[str, Any]:
    def cell(score: float, n: int) -> dict[str, Any]:
        return {"score": score, "ci_low": score - 0.08, "ci_high": score + 0.07, "n": n}

    models = {
        "father": (0.50, 0.40, 0.45),
        "mother": (0.30, 0.60, 0.45),
        "child": (0.55, 0.58, 0.565),
    }
    out: dict[str, Any] = {
        m: {"REASONING": cell(r, 40), "CODE": cell(c, 40), "overall": cell(o, 80)}
        for m, (r, c, o) in models.items()
    }

    def row(a: float, b: float, p: float, verdict: str) -> dict[str, Any]:
        return {
            "score_a": a,
            "score_b": b,
            "diff": a - b,
            "a_only": 7,
            "b_only": 2,
            "n": 80,
            "p_value": p,
            "verdict": verdict,
        }

    out["paired"] = {
        "child_vs_father": {
            "REASONING": row(0.55, 0.50, 0.45, "inside the noise"),
            "CODE": row(0.58, 0.40, 0.004, "A better"),
            "overall": row(0.565, 0.45, 0.012, "A better"),
        },
        "child_vs_mother": {
            "REASONING": row(0.55, 0.30, 0.001, "A better"),
            "CODE": row(0.58, 0.60, 0.8, "inside the noise"),
            "overall": row(0.565, 0.45, 0.21, "inside the noise"),
        },
    }
    return out


def make_run(run: Path, *, health: bool = True, final: bool = True) -> Path:
    """A complete run folder written by hand: MRI, prior, evolution, health, final."""
    mri = run / "mri"
    mri.mkdir(parents=True)
    sa = make_scan(A, name="zf", util=np.ones((L, 4)), load_entropy=np.full(L, 0.9))
    sb = make_scan(B, name="zm", util=UTIL_B, load_entropy=np.full(L, 0.7))
    sa.save(mri, "scan_a")
    sb.save(mri, "scan_b")
    cmp = compare_scans(sa, sb)
    cmp = dataclasses.replace(
        cmp, swap_ab=SWAP_ADV.copy(), swap_ba=-SWAP_ADV.copy(), swap_advantage=SWAP_ADV.copy()
    )
    cmp.save(mri)
    rng = np.random.default_rng(0)
    WeightScan(
        model_a="/p/father",
        model_b="/p/mother",
        base=None,
        num_layers=L,
        components=COMPONENTS,
        global_components=["embed", "lm_head"],
        rel_delta=rng.uniform(0.1, 0.5, (L, 4)),
        task_cosine=np.full((L, 4), np.nan),
        sign_conflict=np.full((L, 4), np.nan),
        global_rel_delta=np.array([0.2, 0.3]),
        global_task_cosine=np.full(2, np.nan),
        global_sign_conflict=np.full(2, np.nan),
    ).save(mri)
    start = seed_recipe(run, START_BLOCKS, revive=False)
    genes = [
        {"name": "ratio", "mean": 0.5, "sigma": 0.15, "lower": 0.0, "upper": 1.0,
         "reason": "no signal outside the layers"},
        {"name": "t_1", "mean": 0.2, "sigma": 0.1, "lower": 0.0, "upper": 0.6,
         "reason": "the father's layers win the swap scan on REASONING"},
        {"name": "router_1", "mean": 0.9, "sigma": 0.1, "lower": 0.5, "upper": 1.0,
         "reason": "the mother has dead experts"},
    ]  # fmt: skip
    prior = {
        "kind": "mri",
        "target": "REASONING",
        "space": "seed",
        "genes": genes,
        "decoded": {"ratio": 0.5, "t_1": 0.2, "router_1": "merged", "blocks": "L0-3 t=0.5"},
        "start_recipe": start.to_yaml(),
    }
    (run / "prior.json").write_text(json.dumps(prior))
    evo = run / "evolve"
    evo.mkdir()
    winner = seed_recipe(run, WINNER_BLOCKS, revive=True)
    (evo / "winner_recipe.yaml").write_text(winner.to_yaml())
    records = []
    for i, (state, fit, r, c) in enumerate(TRIALS):
        records.append(
            {
                "number": i,
                "state": state,
                "values": None if fit is None else [fit],
                "genome": [0.5] * 3,
                "genes": {"t_1": 0.1 * i, "router_1": "zf"},
                "recipe": winner.to_yaml(),
                "fitness": None if state == "fail" else {"REASONING": r, "CODE": c},
                "merge_seconds": 0.5,
                "eval_seconds": 1.5,
                "items_used": 0 if state == "fail" else 20,
                "items_planned": 40,
                "state_note": None,
            }
        )
    evolution = {
        "format": "darwinmerge-evolution/1",
        "optimizer": "cmaes",
        "categories": CATS,
        "budget": 10,
        "winner": {"trial": WINNER, "values": [TRIALS[WINNER][1]], "genes": {}},
        "early_stop": {"stopped": 2, "false_stops": 0, "items_saved": 30, "items_used": 140},
        "selection": {
            "winner": WINNER,
            "winner_fitness": 0.62,
            "selection_gap": 0.05,
            "beats_both_parents": True,
            "test_items": 80,
            "parents": {"zf": {"overall": {"score": 0.45, "ci_low": 0.35, "ci_high": 0.55}}},
            "candidates": [
                {
                    "trial": WINNER,
                    "fitness": 0.62,
                    "test": {"overall": {"score": 0.57, "ci_low": 0.46, "ci_high": 0.67}},
                    "selection_gap": 0.05,
                }
            ],
        },
        "seconds": 12.0,
        "trials": records,
    }
    (evo / "evolution.json").write_text(json.dumps(evolution))
    if health:
        child = MID.copy()
        child[0, 2] = 0.40  # interference at L2
        verdict = health_check(make_scan(child, name="child", util=np.ones((L, 4))), sa, sb)
        verdict.save(run / "health")
    if final:
        (run / "final_scores.json").write_text(json.dumps(final_scores()))
    ledger = {
        "format": "darwinmerge-run/1",
        "config": {
            "parents": {"zf": "/p/father", "zm": "/p/mother"},
            "health": {"enabled": health},
        },
        "phases": {"mri": {"seconds": 3.0}, "prior": {"seconds": 0.1}, "evolve": {"seconds": 12}},
    }
    (run / "run.json").write_text(json.dumps(ledger))
    return run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run")


def test_findings_come_first_and_say_what_happened(run_dir):
    sections = run_report_sections(run_dir)
    assert [s.phase for s in sections] == [
        "findings", "mri", "prior", "evolution", "recipe", "health", "results",
    ]  # fmt: skip
    assert SECTIONS.get("findings") is not None
    text = " ".join(b.text for b in sections[0].blocks if isinstance(b, TextInfo))
    # MRI: the strongest swap cell per category, and who wins it
    assert "REASONING: the father's layer 2 (0.150); CODE: the mother's layer 0 (0.200)." in text
    # mean over categories: -0.095, 0.015, 0.075, 0.005 -> the father's at L1-L3
    assert "the father's layer is the better one at 3 of 4 layers and the mother's at 1" in text
    assert "The mother has 12% dead experts on average over her 4 MoE layers" in text
    assert "dead in L1, L3" in text and "The father has no dead experts" in text
    # search: the winner and its fitness, the recipe in words
    assert "tried 8 candidates (5 complete, 2 stopped early, 1 failed) and chose trial 5" in text
    assert "fitness 0.6200 on the fitness split: the highest fitness" in text
    assert "Router: L0-1 zf, L2-3 merged." in text
    assert "It revives 3 experts in L0, L1, L3 from zf and zm." in text
    # the recipe leans to the father at L0-1 (mean t 0.325) and to the mother at L2-3
    # (0.725); the MRI prefers the mother at L0 only and the father at L1-3: L1 agrees
    assert "at 1 of 4 layers the recipe leans toward the parent the MRI found better" in text
    # health and final scores
    assert "The health check raised flags: L2 interference in REASONING" in text
    assert "the child scores 0.565 [0.485, 0.635] vs father (zf) 0.450" in text
    assert "child - father +0.115 (paired p=0.012: child better)" in text
    assert "child - mother +0.115 (paired p=0.21: inside the noise)" in text
    assert "Not in this report" not in text


def test_evolution_curve_best_so_far_is_the_running_max_of_complete_trials(run_dir):
    sections = {s.phase: s for s in run_report_sections(run_dir)}
    curve = sections["evolution"].find(CURVE_TITLE)
    assert isinstance(curve, LinesInfo)
    assert curve.x == tuple(range(len(TRIALS)))
    best = curve.series["best so far"]
    expected, top = [], -np.inf
    for state, fit, *_ in TRIALS:
        if state == "complete":
            top = max(top, fit)
        expected.append(top)
    np.testing.assert_allclose(best, expected, rtol=1e-12)
    assert np.all(np.diff(best) >= 0)
    # pruned candidates are their own series, complete ones theirs; the failed one is blank
    pruned = curve.series["stopped early (partial fitness)"]
    np.testing.assert_allclose(pruned[[2, 6]], [0.20, 0.30], rtol=1e-12)
    assert np.isnan(pruned[[0, 1, 3, 4, 5, 7]]).all()
    complete = curve.series["complete candidate"]
    assert np.isnan(complete[[2, 3, 6]]).all()
    np.testing.assert_allclose(complete[5], 0.62, rtol=1e-12)
    # best so far never counts a pruned candidate's partial fitness
    c = evolution_curve([{"number": 0, "state": "pruned", "values": [0.9]},
                         {"number": 1, "state": "complete", "values": [0.3]}])  # fmt: skip
    assert np.isnan(c.best[0]) and c.best[1] == pytest.approx(0.3, rel=1e-12)
    heat = sections["evolution"].find("Fitness per category and candidate")
    assert isinstance(heat, HeatmapInfo) and heat.values.shape == (2, len(TRIALS))
    assert heat.values[0, 5] == pytest.approx(0.64, rel=1e-12) and np.isnan(heat.values[1, 2])
    best_tab = sections["evolution"].find("Best candidates")
    assert isinstance(best_tab, TableInfo) and best_tab.rows[0][0] == "5 (winner)"
    assert [r[1] for r in best_tab.rows] == ["0.6200", "0.5800", "0.5500", "0.5000", "0.4000"]


def test_recipe_drawing_equals_resolve_schedule(run_dir):
    sections = {s.phase: s for s in run_report_sections(run_dir)}
    rec = sections["recipe"]
    heat = rec.find("Recipe: t per layer and component")
    assert isinstance(heat, HeatmapInfo)
    assert heat.row_labels == tuple(COMPONENTS)  # the weight scan's components
    recipe = Recipe.from_yaml((run_dir / "evolve" / "winner_recipe.yaml").read_text())
    for i, comp in enumerate(COMPONENTS):
        for layer in range(L):
            want = resolve_schedule(
                recipe.parameters["t"], layer=layer, component=comp, tensor_name="",
                num_layers=L,
            )  # fmt: skip
            assert heat.values[i, layer] == pytest.approx(want, rel=1e-12)
    # spot values: attention gets t + 0.1 in block 1, the FFN and router exactly t
    assert heat.values[0, 0] == pytest.approx(0.4, rel=1e-12)
    assert heat.values[3, 2] == pytest.approx(0.7, rel=1e-12)
    router = rec.find("Router source per layer")
    assert [resolve_router(recipe, i) for i in range(L)] == ["zf", "zf", "merged", "merged"]
    np.testing.assert_array_equal(router.values, [[0.0, 0.0, 0.5, 0.5]])
    revived = rec.find("Revived / transplanted experts")
    assert revived.row_labels == ("L0", "L1", "L3")
    assert {(r, e) for r, e in zip(*np.nonzero(revived.values), strict=True)} == {
        (0, 3),
        (1, 2),
        (2, 0),
    }
    table = rec.find("Revived experts per layer")
    assert table.rows == (
        ("L0", "3", "zm", "transplant"),
        ("L1", "2", "zf", "revive"),
        ("L3", "0", "zf", "revive"),
    )
    outside = dict(
        ((r[0], r[1]), r[2]) for r in rec.find("Outside the layers and per-parent parameters").rows
    )
    assert outside[("t", "embed")] == "0.5000" and outside[("density (zm)", "all")] == "0.8000"


def test_mri_parents_side_by_side_and_prior(run_dir):
    sections = {s.phase: s for s in run_report_sections(run_dir)}
    mri = sections["mri"]
    rows = [b for b in mri.blocks if isinstance(b, RowInfo)]
    assert [r.title for r in rows] == ["Probe x layer importance (BI)", "Expert utilisation"]
    left, right = rows[0].blocks
    assert left.title.endswith("father (zf)") and right.title.endswith("mother (zm)")
    files = load_run_files(run_dir)
    np.testing.assert_array_equal(right.values, files.scan_b.bi)
    assert mri.find("Swap-scan advantage of A over B").values[0, 2] == pytest.approx(0.15)
    prior = sections["prior"]
    bars = prior.find("Start genome (unit space): mean, +/- sigma")
    assert isinstance(bars, BarsInfo) and bars.labels == ("ratio", "t_1", "router_1")
    np.testing.assert_allclose(bars.series["start"], [0.5, 0.2, 0.9], rtol=1e-12)
    np.testing.assert_allclose(bars.high["start"], [0.65, 0.3, 1.0], rtol=1e-12)  # clipped
    genes = prior.find("Genes: start and why")
    assert genes.rows[1][-1] == "the father's layers win the swap scan on REASONING"
    start = prior.find("Start recipe: t per layer and component")
    np.testing.assert_allclose(start.values[3], [0.5] * L, rtol=1e-12)


def test_results_table_has_intervals_and_paired_tests(run_dir):
    sections = {s.phase: s for s in run_report_sections(run_dir)}
    res = sections["results"]
    bars = res.find("Test split: score per category with 95% intervals")
    assert bars.labels == ("REASONING", "CODE", "overall")
    np.testing.assert_allclose(bars.series["child"], [0.55, 0.58, 0.565], rtol=1e-12)
    np.testing.assert_allclose(bars.low["father (zf)"], [0.42, 0.32, 0.37], rtol=1e-12)
    table = res.find("Final table (test split)")
    assert table.header[1:] == ("father (zf) [95% CI]", "mother (zm) [95% CI]", "child [95% CI]")
    assert table.rows[2] == (
        "overall (80)",
        "0.450 [0.370, 0.520]",
        "0.450 [0.370, 0.520]",
        "0.565 [0.485, 0.635]",
    )
    tests = {(r[0], r[1]): r[2:] for r in res.find("Paired tests: child vs each parent").rows}
    assert len(tests) == 6
    assert tests[("CODE", "father")] == ("+0.180", "7", "2", "0.004", "child better")
    assert tests[("CODE", "mother")] == ("-0.020", "7", "2", "0.8", "inside the noise")
    assert tests[("overall", "mother")][-1] == "inside the noise"


def test_missing_phases_are_named_and_skipped(tmp_path):
    run = make_run(tmp_path / "run", health=False, final=False)
    sections = run_report_sections(run)
    assert [s.phase for s in sections] == ["findings", "mri", "prior", "evolution", "recipe"]
    text = [b.text for b in sections[0].blocks if isinstance(b, TextInfo)]
    assert "Not in this report: health check (disabled in the config)" in text
    assert "Not in this report: final scores (no final_scores.json)" in text
    (run / "evolve" / "evolution.json").write_text("{broken")
    sections = run_report_sections(run)
    assert "evolution" not in [s.phase for s in sections]
    text = " ".join(b.text for b in sections[0].blocks if isinstance(b, TextInfo))
    assert "evolution (evolve/evolution.json unreadable" in text
    page = write_run_report(run)
    assert page == run / "report.html" and "Not in this report" in page.read_text()


def test_not_a_run_folder_is_one_line(tmp_path):
    from darwinmerge.errors import ConfigError

    with pytest.raises(ConfigError, match="not a darwin run folder"):
        run_report_sections(tmp_path)


def test_write_refuses_overwrite_without_force(run_dir):
    from darwinmerge.errors import OutputExistsError

    page = write_run_report(run_dir)
    html = page.read_text()
    assert html.index("Findings</h2>") < html.index("<img")  # words before any plot
    with pytest.raises(OutputExistsError):
        write_run_report(run_dir, force=False)


def test_a_winner_below_the_best_fitness_names_the_keep_rule(run_dir):
    from darwinmerge.report.findings_section import search_finding

    evo = json.loads((run_dir / "evolve" / "evolution.json").read_text())
    evo["winner"] = {"trial": 7, "values": [0.58, 0.56]}
    text = search_finding(evo, None, L, components=COMPONENTS, keep="CODE")
    assert "chose trial 7, fitness 0.5800 on the fitness split (the best complete fitness" in text
    assert "was 0.6200; the winner rule keeps the father's CODE score" in text


def test_parents_named_father_and_mother_are_not_labelled_twice():
    from darwinmerge.report import results_section
    from darwinmerge.report.findings_section import final_finding

    names = {"father": "father", "mother": "mother"}
    sec = results_section(final_scores(), names=names)
    assert sec.find("Final table (test split)").header[1] == "father [95% CI]"
    assert "vs father 0.450 [0.370, 0.520] and mother 0.450" in final_finding(final_scores(), names)


def test_a_run_stopped_after_the_mri_reports_the_mri_only(tmp_path):
    import shutil

    run = make_run(tmp_path / "run", health=False, final=False)
    (run / "prior.json").unlink()
    shutil.rmtree(run / "evolve")
    sections = run_report_sections(run)
    assert [s.phase for s in sections] == ["findings", "mri"]
    text = [b.text for b in sections[0].blocks if isinstance(b, TextInfo)]
    assert text[0].startswith("MRI: The swap scan's most decisive layer per probe category")
    assert "Not in this report: prior (no prior.json)" in text
    assert "Not in this report: evolution (no evolve/evolution.json)" in text
    assert "Not in this report: final recipe (no evolve/winner_recipe.yaml)" in text


def test_titles_name_the_parents_not_their_paths(tmp_path):
    run = make_run(tmp_path / "run")
    sections = {s.phase: s for s in run_report_sections(run)}
    titles = [getattr(b, "title", "") for b in sections["mri"].blocks]
    assert "Advantage map BI(A) - BI(B)   A=father (zf)  B=mother (zm)" in titles
    chart = sections["health"].find("Child vs parents: importance per layer")
    assert "parent A (father (zf)) and parent B (mother (zm))" in chart.caption


def test_revived_experts_match_the_merge_engine(tmp_path):
    """The drawing's revived experts are the transplants the planner makes (tiny parents)."""
    from contextlib import ExitStack

    from darwinmerge.merge.api import open_sources
    from darwinmerge.merge.planner import match_parents
    from darwinmerge.merge.revive import revival_transplants
    from darwinmerge.report import revived_experts
    from darwinmerge.zoo.tiny import make_parent_pair

    a, b = make_parent_pair("qwen3_moe", tmp_path / "models", seed_a=0, seed_b=1)
    util_a = np.ones((L, 4))
    util_a[1, 2] = 0.0  # dead in the donor too: skipped
    make_scan(A, name="a", util=util_a).save(tmp_path, "donor")
    make_scan(B, name="b", util=UTIL_B).save(tmp_path, "into")
    recipe = Recipe.parse(
        {
            "parents": [{"name": "pa", "path": str(a)}, {"name": "pb", "path": str(b)}],
            "method": "linear",
            "parameters": {"weight": 0.5},
            "revive": {
                "source": "pa",
                "into": "pb",
                "scan": str(tmp_path / "into.json"),
                "donor_scan": str(tmp_path / "donor.json"),
                "threshold": 0.05,
            },
        }
    )
    with ExitStack() as stack:
        matching = match_parents(recipe, open_sources(recipe, stack))
        engine, notes = revival_transplants(recipe, matching)
    mine = revived_experts(recipe)
    assert (
        [(r.layer, r.expert, r.source) for r in mine]
        == [(t.layer, t.expert, t.source) for t in engine]
        == [(3, 0, "pa")]
    )
    assert any("skipped" in n for n in notes)


@pytest.mark.parametrize(
    ("diff", "p", "words"),
    [
        (0.03, 0.01, "the search improved on its start"),
        (-0.03, 0.01, "WORSE than its start"),
        (0.004, 0.88, "added nothing beyond noise"),
        (0.05, float("nan"), "added nothing beyond noise"),
    ],
)
def test_start_finding_says_whether_the_search_added_anything(
    diff: float, p: float, words: str
) -> None:
    from darwinmerge.report.findings_section import final_finding, start_finding

    scores = final_scores()
    assert start_finding(scores) is None  # no start scored: nothing said
    scores["paired"]["child_vs_start"] = {
        "overall": {"diff": diff, "a_only": 12, "b_only": 9, "p_value": p, "verdict": "?"}
    }
    text = start_finding(scores)
    assert text is not None and words in text and f"{diff:+.3f}" in text
    assert "12 items only the child got right, 9 only the start" in text
    assert "Against its own start: " + text in final_finding(scores)

"""darwin demo: both pairs run end to end; final_scores.json holds the first pair at the
top level and the collapsed pair under its own key, each recomputable from its items and
equal to the table the CLI prints. The micro zoo stands in for the trained one here; the
slow test runs the real demo."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from darwinmerge.run import scores_from_items
from darwinmerge.run.final import final_scores_table

MODELS = ("father", "mother", "child")


def _check_pair(scores: dict, run_dir: Path) -> None:
    assert set(scores) >= {*MODELS, "paired"}
    items = json.loads((run_dir / "final" / "results.json").read_text())
    recomputed = scores_from_items(items)
    assert {k: scores[k] for k in recomputed} == recomputed
    assert json.loads((run_dir / "final_scores.json").read_text()) == recomputed


def _printed_rows(output: str) -> list[list[str]]:
    """The rows of the printed score tables (compact layout: cells two spaces apart)."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in output.splitlines()]
    return [r for r in rows if len(r) == 9 and r[1].isdigit()]


def test_demo_on_the_micro_zoo(micro_zoo: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from darwinmerge.cli import app

    monkeypatch.setenv("COLUMNS", "80")  # a log file's width: the tables fit it
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app, ["demo", "--out", str(out), "--zoo", str(micro_zoo), "--trials", "2"]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads((out / "final_scores.json").read_text())
    first = {k: v for k, v in scores.items() if k != "collapsed"}
    _check_pair(first, out / "pair")
    _check_pair(scores["collapsed"], out / "collapsed")
    collapsed_cfg = json.loads((out / "collapsed" / "run.json").read_text())["config"]
    assert collapsed_cfg["parents"]["mother"].endswith("mother_collapsed")
    assert collapsed_cfg["evolve"]["space"]["revive"] == "auto"
    # the printed tables are the JSON's numbers, row for row
    printed = _printed_rows(result.output)
    expected = [row for s in (first, scores["collapsed"]) for row in final_scores_table(s)[1]]
    assert printed == expected
    assert "…" not in result.output
    for pair in ("pair", "collapsed"):
        assert (out / pair / "report.html").is_file()
        assert f"report: {out / pair / 'report.html'}" in result.output.replace("\n", "")
    assert json.loads((out / "demo.json").read_text())["reused"] == {"pair": [], "collapsed": []}

    # run again (``make demo`` twice): every phase is reused, the same tables print, exit 0
    again = CliRunner().invoke(
        app, ["demo", "--out", str(out), "--zoo", str(micro_zoo), "--trials", "2"]
    )
    assert again.exit_code == 0, again.output
    assert _printed_rows(again.output) == printed
    assert json.loads((out / "final_scores.json").read_text()) == scores
    reused = json.loads((out / "demo.json").read_text())["reused"]
    assert set(reused) == {"pair", "collapsed"}
    for phases in reused.values():
        assert phases == ["mri", "prior", "evolve", "health", "final", "report"]
    assert "candidate" not in again.output  # no candidate was merged again
    assert "reused: finished phases of pair, collapsed" in again.output


@pytest.mark.slow
def test_demo_breeds_a_winner_on_the_trained_zoo(trained_zoo: Path, tmp_path: Path) -> None:
    """The issue's targets, as properties of this machine's zoo. First pair: the child
    beats both parents overall on the test split, with p < 0.05 against the stronger.
    Collapsed pair (docs/zoo.md: her skill does not survive a merge): the child is far
    above her and not below the father beyond the noise."""
    from darwinmerge.run.demo import run_demo

    result = run_demo(tmp_path / "demo", trained_zoo)
    for run in result.runs.values():
        _check_pair(run.final, run.run_dir)
    first = result.runs["pair"].final
    child = first["child"]["overall"]["score"]
    assert child > first["father"]["overall"]["score"]
    assert child > first["mother"]["overall"]["score"]
    stronger = max(("father", "mother"), key=lambda p: first[p]["overall"]["score"])
    assert first["paired"][f"child_vs_{stronger}"]["overall"]["p_value"] < 0.05
    second = result.runs["collapsed"].final["paired"]
    assert second["child_vs_mother"]["overall"]["p_value"] < 0.05
    assert second["child_vs_mother"]["overall"]["diff"] > 0
    vs_father = second["child_vs_father"]["overall"]
    assert vs_father["diff"] >= 0 or vs_father["p_value"] >= 0.05

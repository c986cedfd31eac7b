"""The terminal tables fit 80 columns: ``darwin run``'s final table (compact layout) and
``darwin eval``'s tables, rendered at width 80, keep every cell on one line and whole
(no wrap, no ellipsis); ``--wide`` keeps the one-table layout."""

from __future__ import annotations

import random
import re

import pytest
from rich.console import Console

from darwinmerge.cli.eval_cmd import _print_comparison, _print_result
from darwinmerge.cli.run_cmd import print_final_table
from darwinmerge.evaluate import compare
from darwinmerge.evaluate.results import OVERALL, EvalResult
from darwinmerge.evaluate.scorers import ItemResult
from darwinmerge.run.final import (
    final_intervals_table,
    final_scores_table,
    final_table,
    scores_from_items,
)

CATEGORIES = ("reasoning", "code", "logic", "multilingual", "knowledge")
#: per category: the chance that father, mother, child get an item right
SKILL = {
    "reasoning": (0.61, 0.83, 0.83),
    "code": (0.8, 0.3, 0.79),
    "logic": (0.75, 0.4, 0.76),
    "multilingual": (0.77, 0.2, 0.2),
    "knowledge": (0.9, 0.5, 0.02),
}


def _items(per_category: int, seed: int = 0) -> dict[str, list[dict]]:
    rnd = random.Random(seed)
    items: dict[str, list[dict]] = {"father": [], "mother": [], "child": []}
    for cat in CATEGORIES:
        for i in range(per_category):
            for model, p in zip(items, SKILL[cat], strict=True):
                right = rnd.random() < p
                items[model].append(ItemResult(f"{cat}-{i}", cat, "x", "x", right).to_dict())
    return items


def _scores(per_category: int) -> dict:
    return scores_from_items({"items": _items(per_category)})


def _render(draw) -> str:  # type: ignore[no-untyped-def]
    console = Console(width=80, record=True, color_system=None)
    draw(console)
    return console.export_text()


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def _assert_table_fits(text: str, header: list[str], rows: list[list[str]]) -> None:
    """The table whose header is ``header`` is in ``text``: its header on one line, then
    the rule, then exactly one line per row holding that row's cells whole."""
    lines = text.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines)
    assert "…" not in text
    at = [i for i, line in enumerate(lines) if _cells(line) == header]
    assert len(at) == 1, f"header {header} not on one line in\n{text}"
    assert set(lines[at[0] + 1].strip()) == {"─"}
    body = lines[at[0] + 2 : at[0] + 2 + len(rows)]
    assert [_cells(line) for line in body] == rows
    after = lines[at[0] + 2 + len(rows) :]
    assert not after or not after[0].startswith(" "), "a row went on over two lines"


@pytest.mark.parametrize("per_category", [154, 2000])
def test_final_table_fits_80_columns(per_category: int) -> None:
    scores = _scores(per_category)
    text = _render(lambda c: print_final_table(c, scores, "test split: runs/demo/pair"))
    header, rows = final_scores_table(scores)
    assert len(rows) == len(CATEGORIES) + 1 and rows[-1][0] == OVERALL
    _assert_table_fits(text, header, rows)
    _assert_table_fits(text, *final_intervals_table(scores))
    # the compact cells are the JSON's numbers
    for row in rows:
        cat = row[0]
        assert row[1] == str(scores["child"][cat]["n"])
        for j, model in enumerate(("father", "mother", "child")):
            assert float(row[2 + j]) == pytest.approx(scores[model][cat]["score"], abs=5.01e-4)
        for k, parent in enumerate(("father", "mother")):
            paired = scores["paired"][f"child_vs_{parent}"][cat]
            assert float(row[5 + 2 * k]) == pytest.approx(paired["diff"], abs=5.01e-4)
            p, cell = paired["p_value"], row[6 + 2 * k]
            if cell == "<1e-99":
                assert p < 1e-99
            else:
                assert float(cell) == pytest.approx(p, rel=0.5, abs=5.01e-4)
    # the data spans tiny and large p-values, both signs, 3-4 digit counts
    ps = [scores["paired"]["child_vs_mother"][c]["p_value"] for c in CATEGORIES]
    assert min(ps) < 1e-5 and max(ps) > 0.05


def test_wide_final_table_is_the_one_table_layout() -> None:
    scores = _scores(154)
    console = Console(width=250, record=True, color_system=None)
    print_final_table(console, scores, "test split", wide=True)
    text = console.export_text()
    for row in final_table(scores)[1]:
        line = next(line for line in text.splitlines() if line.startswith(f"│ {row[0]} "))
        assert [c.strip() for c in line.split("│")[1:-1]] == row


def test_eval_tables_fit_80_columns() -> None:
    items = _items(154)
    results = {
        name: EvalResult.from_items("exact_match", [ItemResult(**it) for it in rows])
        for name, rows in items.items()
    }
    comp = compare(
        results["child"],
        results["father"],
        name_a="startcheckpoint-with-a-long-folder-name",
        name_b="father",
    )
    verdicts = {row.verdict for row in comp.rows.values()}
    assert verdicts == {"A better", "B better", "inside the noise"}
    text = _render(lambda c: _print_comparison(c, comp))
    header = ["category", "A", "B", "A-B", "A only", "B only", "p", "verdict"]
    rows = [
        [
            cat,
            f"{r.score_a:.3f}",
            f"{r.score_b:.3f}",
            f"{r.diff:+.3f}",
            str(r.a_only),
            str(r.b_only),
            f"{r.p_value:.3g}",
            r.verdict,
        ]
        for cat, r in comp.rows.items()
    ]
    _assert_table_fits(text, header, rows)
    assert "A = startcheckpoint-with-a-long-folder-name" in text.replace("\n", "")

    name = "startcheckpoint-with-a-long-folder-name"
    text = _render(lambda c: _print_result(c, name, results["child"]))
    assert f"{name} (exact_match)" in text.splitlines()[0]
    rows = [
        [cat, str(s.n), f"{s.score:.3f}", f"[{s.ci_low:.3f}, {s.ci_high:.3f}]"]
        for cat, s in results["child"].table().items()
    ]
    _assert_table_fits(text, ["category", "n", "score", "95% CI"], rows)

"""The fitness-noise benchmark: its bootstrap numbers on synthetic scores with a known
noise, and its small mode end to end on a micro zoo."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.benchmarks.scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


def _module() -> Any:
    return load_benchmark("fitness_noise")


def test_bootstrap_sd_matches_the_binomial_and_pairing_removes_shared_difficulty() -> None:
    noise_row = _module().noise_row
    rng = np.random.default_rng(0)
    n, q = 400, np.linspace(0.3, 0.7, 8)
    # independent Bernoulli items, one category: SD of one candidate = sqrt(q(1-q)/n)
    values = (rng.random((len(q), n)) < q[:, None]).astype(float)
    row = noise_row(values, ["a"] * n, q, boot=2000, seed=1)
    assert row["sd_single"] == pytest.approx(math.sqrt(0.25 / n), rel=0.15)
    assert row["spearman_test"] > 0.8  # a spread of 0.4 against a noise of 0.025
    assert row["pick_test"] == pytest.approx(q.max())
    # a shared item difficulty (same items hard for every candidate) is item noise for
    # one candidate but cancels in the paired difference
    difficulty = rng.normal(0, 1.0, n)
    cont = difficulty[None, :] + np.arange(8)[:, None] * 0.01
    row = noise_row(cont, ["a"] * n, q, boot=500, seed=1)
    assert row["sd_single"] == pytest.approx(1.0 / math.sqrt(n), rel=0.15)
    assert row["sd_paired"] < 1e-9 * row["sd_single"] + 1e-12
    assert row["reliability"] == pytest.approx(1.0)
    assert row["spearman_test"] == pytest.approx(1.0)


@pytest.mark.slow
def test_small_mode_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "noise.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fitness_noise.py"), "--small", "--out"]
        + [str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| gold_prob | fit-all |" in proc.stdout and "| exact_match | fit-4 |" in proc.stdout
    import json

    res = json.loads(out.read_text())
    assert len(res["candidates"]) == 4 and {c["arm"] for c in res["candidates"]} == {
        "prior",
        "blind",
    }
    for r in res["rows"]:
        assert r["sd_single"] >= 0.0 and r["sd_paired"] >= 0.0 and r["n"] > 0
    assert res["fitness_items"] + res["test_items"] == 100


def test_selection_rows_rescoring_on_more_items_lowers_the_regret() -> None:
    selection_rows = _module().selection_rows
    rng = np.random.default_rng(3)
    true = np.linspace(0.70, 0.80, 30)
    rows = []
    for score, noise in (("exact_match", 0.03), ("gold_prob", 0.01)):
        rows.append({"score": score, "items": "fit-40", "fitness": true + rng.normal(0, noise, 30)})
        rows.append({"score": score, "items": "fit-all", "fitness": true + rng.normal(0, 1e-4, 30)})
    res = {"candidates": [{"test_em": float(t)} for t in true], "rows": rows}
    out = {r["rule"]: r for r in selection_rows(res, visited=16, top=5, draws=500)}
    assert set(out) == {
        "exact_match best",
        "exact_match + rescore",
        "gold_prob best",
        "gold_prob + rescore",
    }
    for r in out.values():  # the regret is the best visited minus the pick: >= 0
        assert r["regret"] >= 0.0 and 0.70 <= r["test"] <= 0.80
    # less noise picks better; re-scoring the top 5 on (nearly) noiseless items too
    assert out["gold_prob best"]["regret"] < out["exact_match best"]["regret"]
    assert out["exact_match + rescore"]["regret"] < out["exact_match best"]["regret"]


def test_spearman_averages_tied_ranks() -> None:
    fn = _module()
    # ranks of [1, 2, 2, 3] are [1, 2.5, 2.5, 4]; hand-computed Pearson of the ranks
    a = np.array([1.0, 2.0, 2.0, 3.0])
    assert fn._ranks(a).tolist() == [1.0, 2.5, 2.5, 4.0]
    b = np.array([10.0, 30.0, 20.0, 40.0])  # ranks 1, 3, 2, 4
    ra, rb = np.array([1, 2.5, 2.5, 4]), np.array([1, 3, 2, 4.0])
    expected = ((ra - ra.mean()) * (rb - rb.mean())).sum() / math.sqrt(
        ((ra - ra.mean()) ** 2).sum() * ((rb - rb.mean()) ** 2).sum()
    )
    assert fn._spearman(a, b) == pytest.approx(expected, rel=1e-12)
    assert fn._spearman(b, -b) == pytest.approx(-1.0)
    assert math.isnan(fn._spearman(np.ones(4), b))

"""darwin run on the micro zoo: every phase's output, resume at each phase boundary
without redoing finished phases, a SIGKILL mid-run, and the final table recomputed
from its per-item results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from darwinmerge.run import FINAL_SCORES_FILE, PHASES, RunConfig, run, scores_from_items
from tests.run.conftest import run_config_data, write_config


def _mtimes(run_dir: Path) -> dict[str, int]:
    return {
        str(p.relative_to(run_dir)): p.stat().st_mtime_ns
        for p in run_dir.rglob("*")
        if p.is_file() and p.name != "run.json" and "evolve/study" not in str(p)
    }


def test_run_resumes_at_every_phase_boundary(micro_zoo: Path, tmp_path: Path) -> None:
    cfg = RunConfig.model_validate(run_config_data(micro_zoo))
    out = tmp_path / "run"
    logs: list[str] = []
    before: dict[str, int] = {}
    for phase in PHASES[:-1]:  # report is off in this config
        result = run(cfg, out, stop_after=phase, log=logs.append)
        ledger = json.loads((out / "run.json").read_text())
        done = list(ledger["phases"])
        assert done == list(PHASES[: PHASES.index(phase) + 1])
        # earlier phases were skipped, not redone: their files are untouched
        now = _mtimes(out)
        assert {k: now[k] for k in before} == before
        assert result.skipped == done[:-1]
        before = now
    assert (out / "mri" / "comparison.json").is_file()
    prior = json.loads((out / "prior.json").read_text())
    assert prior["kind"] == "mri" and all(0 <= g["mean"] <= 1 for g in prior["genes"])
    assert (out / "evolve" / "evolution.json").is_file()
    assert (out / "evolve" / "child" / "config.json").is_file()
    assert (out / "health" / "verdict.json").is_file()
    # a re-run of a finished run does nothing but report
    again = run(cfg, out, log=logs.append)
    assert again.skipped == list(PHASES[:-1]) and not again.seconds
    assert again.child == out / "evolve" / "child"


def test_final_table_matches_its_items(micro_zoo: Path, tmp_path: Path) -> None:
    cfg = RunConfig.model_validate(run_config_data(micro_zoo))
    out = tmp_path / "run"
    result = run(cfg, out)
    final = json.loads((out / FINAL_SCORES_FILE).read_text())
    assert final == result.final
    assert set(final) == {"father", "mother", "child", "start", "paired"}
    assert set(final["paired"]) == {"child_vs_father", "child_vs_mother", "child_vs_start"}
    items = json.loads((out / "final" / "results.json").read_text())
    assert scores_from_items(items, alpha=cfg.final.alpha) == final
    n = final["child"]["overall"]["n"]
    assert n == len(items["items"]["child"]) == len(items["items"]["start"]) > 0
    assert not any(p.name.startswith(".start-") for p in out.iterdir())  # scratch removed
    # the start is the prior's recipe: merged and scored on the same test items
    start = final["paired"]["child_vs_start"]["overall"]
    assert start["score_b"] == final["start"]["overall"]["score"]
    assert start["diff"] == pytest.approx(start["score_a"] - start["score_b"])
    for model in ("father", "mother", "child", "start"):
        for cat, s in final[model].items():
            assert s["ci_low"] <= s["score"] <= s["ci_high"], (model, cat)
    row = final["paired"]["child_vs_father"]["overall"]
    assert row["score_a"] == final["child"]["overall"]["score"]
    assert 0.0 <= row["p_value"] <= 1.0


@pytest.mark.slow
@pytest.mark.integration
def test_sigkill_mid_run_then_resume(micro_zoo: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "run.yaml", run_config_data(micro_zoo, trials=6))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "darwinmerge.cli", "run", str(config), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ledger = out / "run.json"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:  # kill once Phase 2 has started
            if ledger.is_file() and "prior" in json.loads(ledger.read_text())["phases"]:
                if (out / "evolve" / "config.yaml").is_file():
                    break
            if proc.poll() is not None:
                pytest.fail(f"darwin run ended before the kill: {proc.stderr.read().decode()}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    phases = json.loads(ledger.read_text())["phases"]
    assert "evolve" not in phases and "mri" in phases
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr
    assert "mri: finished in an earlier run; skipped" in done.stderr
    assert "resuming" in done.stderr
    assert (out / FINAL_SCORES_FILE).is_file()


def test_no_start_in_the_final_table_when_asked(micro_zoo: Path, tmp_path: Path) -> None:
    data = run_config_data(micro_zoo)
    data["final"] = {**data.get("final", {}), "vs_start": False}
    result = run(RunConfig.model_validate(data), tmp_path / "run")
    assert set(result.final) == {"father", "mother", "child", "paired"}

"""SIGKILL of ``darwin evolve`` mid-run, then ``--resume``: the same study continues and
at most the trial in flight is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from darwinmerge.evolve.study import STUDY_NAME, open_storage

from .search_helpers import config_data, micro_zoo  # noqa: F401

DARWIN = [sys.executable, "-m", "darwinmerge.cli"]
TRIALS = 30  # enough that the kill lands mid-run on a fast machine


def _finished(run: Path) -> list[optuna.trial.FrozenTrial]:
    if not (run / "study.journal").exists():
        return []
    try:
        study = optuna.load_study(study_name=STUDY_NAME, storage=open_storage(run))
    except KeyError:
        return []
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(states=states)


@pytest.mark.slow  # ~30 s: three darwin processes
def test_sigkill_then_resume_continues_the_same_study(micro_zoo, tmp_path):  # noqa: F811
    cfg = config_data(micro_zoo, trials=TRIALS, space={"kind": "seed"})
    cfg["select"] = {"top_k": 1, "write_child": False}
    path = tmp_path / "evolve.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*DARWIN, "evolve", str(path), "--out", str(run)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    try:
        while len(_finished(run)) < 3:
            assert proc.poll() is None, "darwin evolve ended before it could be killed"
            assert time.time() < deadline, "no trials finished in time"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = {t.number: (t.params, t.values) for t in _finished(run)}
    assert 3 <= len(before) < TRIALS
    assert not (run / "evolution.json").exists()
    # a plain rerun refuses the existing folder; --resume continues it
    again = subprocess.run(
        [*DARWIN, "evolve", str(path), "--out", str(run)], env=env, capture_output=True, text=True
    )
    assert again.returncode == 1 and "--resume" in again.stderr.strip().splitlines()[-1]
    done = subprocess.run(
        [*DARWIN, "evolve", str(path), "--out", str(run), "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    study = optuna.load_study(study_name=STUDY_NAME, storage=open_storage(run))
    trials = study.trials
    # one study: the trials finished before the kill are kept unchanged
    for number, (params, values) in before.items():
        assert trials[number].params == params and trials[number].values == values
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) <= 1  # one worker: at most one trial was in flight
    for t in failed:
        assert t.user_attrs["error"] == "in flight when the run was stopped"
        assert t.number == len(before)
    finished = [t for t in trials if t.state != optuna.trial.TrialState.FAIL]
    assert len(finished) + len(failed) == TRIALS == len(trials)
    # the first trial is the prior's start, enqueued (optimizer.start_first), not sampled
    assert "fixed_params" in trials[0].system_attrs
    assert "cma:generation" not in trials[0].system_attrs
    sampled = [t for t in trials[1:] if "fixed_params" not in t.system_attrs]
    assert len(sampled) == TRIALS - 1
    # CMA-ES continued from the stored state: generations after the kill do not restart.
    # Every sampled trial carries its generation, except a trial killed after it was
    # created and before the sampler stored one (the failed in-flight trial, when the kill
    # hit then)
    gens = [
        t.system_attrs.get("cma:generation")
        for t in sampled
        if t.state != optuna.trial.TrialState.FAIL or "cma:generation" in t.system_attrs
    ]
    assert None not in gens and len(gens) >= len(finished) - 1
    assert gens == sorted(gens)
    record = json.loads((run / "evolution.json").read_text())
    assert [r["number"] for r in record["trials"]] == list(range(TRIALS))
    assert record["selection"]["test_items"] > 0

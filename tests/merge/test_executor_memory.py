"""The streaming executor's memory bound: tensors merged at the same time never add up
to more than the largest one (two big expert tensors are never in flight together),
small tensors still run in parallel, and the output keeps plan order."""

from __future__ import annotations

import threading
import time

import torch

from darwinmerge.merge import Recipe, StateDictSource, execute_plan, plan_merge
from darwinmerge.merge import executor as ex
from darwinmerge.zoo.tiny import build_tiny_model


def test_in_flight_bytes_stay_within_the_largest_job(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ma, mb = build_tiny_model("qwen3_5_moe", seed=0), build_tiny_model("qwen3_5_moe", seed=1)
    sources = [StateDictSource.from_model(ma), StateDictSource.from_model(mb)]
    recipe = Recipe.parse(
        {
            "parents": [{"name": "f", "path": "a"}, {"name": "m", "path": "b"}],
            "method": "linear",
            "parameters": {"weight": 0.5},
        }
    )
    plan = plan_merge(recipe, sources)
    largest = max(ex.job_bytes(j) for j in plan.jobs)
    lock = threading.Lock()
    state = {"bytes": 0, "peak": 0, "most_jobs": 0, "jobs": 0}
    real = ex.run_job

    def watched(job, *args, **kwargs):  # type: ignore[no-untyped-def]
        with lock:
            state["bytes"] += ex.job_bytes(job)
            state["jobs"] += 1
            state["peak"] = max(state["peak"], state["bytes"])
            state["most_jobs"] = max(state["most_jobs"], state["jobs"])
        time.sleep(0.002)  # let the other thread overlap if it may
        try:
            return real(job, *args, **kwargs)
        finally:
            with lock:
                state["bytes"] -= ex.job_bytes(job)
                state["jobs"] -= 1

    monkeypatch.setattr(ex, "run_job", watched)
    got: list[str] = []
    out: dict[str, torch.Tensor] = {}

    def sink(name: str, t: torch.Tensor) -> None:
        got.append(name)
        out[name] = t

    execute_plan(plan, sources, sink, threads=2)
    assert got == [j.name for j in plan.jobs]
    assert state["peak"] <= largest
    assert state["most_jobs"] == 2  # small tensors did run side by side
    # same tensors as one thread
    single: dict[str, torch.Tensor] = {}
    execute_plan(plan, sources, lambda n, t: single.__setitem__(n, t), threads=1)
    assert all(torch.equal(out[k], single[k]) for k in single)


def test_next_jobs_run_while_an_output_is_written_within_the_budget(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A slow writer: jobs run while it writes, but the running jobs' memory plus the
    output being written never exceeds the most one job needs alone."""
    ma, mb = build_tiny_model("qwen3_5_moe", seed=0), build_tiny_model("qwen3_5_moe", seed=1)
    mc = build_tiny_model("qwen3_5_moe", seed=2)
    sources = [StateDictSource.from_model(m) for m in (ma, mb, mc)]
    recipe = Recipe.parse(
        {
            "parents": [{"name": "f", "path": "a"}, {"name": "m", "path": "b"}],
            "base": "c",
            "method": "ties",
            "parameters": {"weight": 0.5, "density": 0.5},
        }
    )
    plan = plan_merge(recipe, sources)
    budget = max(ex.job_memory(j) for j in plan.jobs)
    # a TIES job on an unblocked tensor holds two parents, the base and its output
    biggest = max(plan.jobs, key=ex.job_bytes)
    assert ex.job_memory(biggest) == 4 * ex.job_bytes(biggest)
    lock = threading.Lock()
    state = {"held": 0, "peak": 0, "writing": 0, "overlaps": 0}
    real = ex.run_job

    def watched(job, *args, **kwargs):  # type: ignore[no-untyped-def]
        with lock:
            state["held"] += ex.job_memory(job)
            state["overlaps"] += state["writing"]  # started while an output is written
            state["peak"] = max(state["peak"], state["held"])
        try:
            return real(job, *args, **kwargs)
        finally:
            with lock:
                state["held"] -= ex.job_memory(job)

    def sink(name: str, t: torch.Tensor) -> None:
        size = t.numel() * t.element_size()
        with lock:
            state["held"] += size
            state["writing"] = 1
            state["peak"] = max(state["peak"], state["held"])
        time.sleep(0.01)  # a slow disk
        with lock:
            state["writing"] = 0
            state["held"] -= size

    monkeypatch.setattr(ex, "run_job", watched)
    execute_plan(plan, sources, sink, threads=2)
    assert state["peak"] <= budget
    assert state["overlaps"] > len(plan.jobs) // 2  # most jobs started during a write

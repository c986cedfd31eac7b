"""Candidate workers: the in-process runner and two local Ray actors give identical scores
for the same genomes; the resident child equals a fresh merge; failures are results."""

from __future__ import annotations

import numpy as np
import pytest

from darwinmerge.evaluate.tasks import load_tasks, stratified_subset
from darwinmerge.evolve.early_stop import EarlyStopRule
from darwinmerge.evolve.workers import (
    CandidateRequest,
    CandidateWorker,
    InProcessPool,
    RayPool,
    WorkerSpec,
)

from .search_helpers import TwoGeneSpace, micro_zoo, write_mc_tasks  # noqa: F401

GENOMES = [[0.0, 0.0], [1.0, 1.0], [0.7, 0.1], [0.3, 0.9]]


def _spec(zoo, tmp_path, **kw):
    tasks = write_mc_tasks(tmp_path / "mc.jsonl")
    items = stratified_subset(load_tasks(str(tasks), split=None), 1.0, seed=0)
    return WorkerSpec(
        parents=(("father", str(zoo / "father")), ("mother", str(zoo / "mother"))),
        base=None,
        items=tuple(items),
        categories=("sums", "words"),
        scorer="auto",
        chunk_size=16,
        batch_size=16,
        **kw,
    )


def _requests(zoo):
    space = TwoGeneSpace(zoo / "father", zoo / "mother")
    return [CandidateRequest(i, space.decode(np.array(g)).to_yaml()) for i, g in enumerate(GENOMES)]


@pytest.mark.slow  # ~30 s: starting Ray
def test_two_ray_actors_match_the_in_process_runner(micro_zoo, tmp_path):  # noqa: F811
    pytest.importorskip("ray", reason="Ray is installed by make test (the [ray] extra)")
    spec = _spec(micro_zoo, tmp_path)
    local = InProcessPool(spec).map(_requests(micro_zoo))
    assert all(r.state == "complete" for r in local), [r.error for r in local]
    # the genomes give different log-likelihoods: the comparison below is not vacuous
    assert len({r.digest for r in local}) == len(GENOMES)
    pool = RayPool(spec, 2, init_options={"num_cpus": 2, "object_store_memory": 80 * 2**20})
    try:
        remote = pool.map(_requests(micro_zoo))
    finally:
        pool.close()
    assert {r.worker for r in remote} == {"ray-0", "ray-1"}
    for a, b in zip(local, remote, strict=True):
        assert a.trial == b.trial and b.state == "complete"
        assert a.fitness == b.fitness and a.categories == b.categories
        assert a.digest == b.digest  # every item's prediction and log-likelihoods


def test_resident_child_equals_a_fresh_worker_and_failures_are_results(micro_zoo, tmp_path):  # noqa: F811
    spec = _spec(micro_zoo, tmp_path)
    worker = CandidateWorker(spec)
    requests = _requests(micro_zoo)
    first = [worker.score(r) for r in requests]
    # the same genomes again, in another order, on the same resident child
    again = [worker.score(r) for r in reversed(requests)][::-1]
    assert [r.digest for r in first] == [r.digest for r in again]
    # genome [0, 0] is the father: its fitness equals the father's own evaluation
    father = worker.evaluate_model("parent:father", spec.items)
    counts = {c: [s.k, s.n] for c, s in father.categories.items()}
    assert first[0].categories == counts
    # a recipe naming a parent the worker does not hold fails the trial, not the worker
    bad = requests[1].recipe_yaml.replace("name: mother", "name: stranger")
    res = worker.score(CandidateRequest(9, bad))
    assert res.state == "failed" and "stranger" in (res.error or "")
    assert worker.score(requests[2]).digest == first[2].digest


def test_nan_weights_fail_the_candidate(micro_zoo, tmp_path):  # noqa: F811
    import torch

    spec = _spec(micro_zoo, tmp_path)
    worker = CandidateWorker(spec)
    name = "lm_head.weight"
    src = worker.sources[1]
    good = src.get(name)
    before = CandidateWorker(spec).score(_requests(micro_zoo)[1])
    src._t[name] = torch.full_like(good, float("nan"))
    res = worker.score(_requests(micro_zoo)[1])  # all mother: NaN logits
    assert res.state == "failed" and "NaN/Inf logits" in (res.error or "")
    src._t[name] = good  # a failed candidate is forgotten: the next one is merged afresh
    ok = worker.score(_requests(micro_zoo)[1])
    assert ok.state == "complete" and ok.digest == before.digest


def test_early_stop_in_the_worker_and_its_audit(micro_zoo, tmp_path):  # noqa: F811
    rule = EarlyStopRule(z=1.0, min_items=2)
    req = _requests(micro_zoo)[0]
    full = CandidateWorker(_spec(micro_zoo, tmp_path)).score(req)
    best = 0.99  # unreachable for this candidate: it stops after the first chunks
    stop = CandidateWorker(_spec(micro_zoo, tmp_path, rule=rule))
    res = stop.score(CandidateRequest(0, req.recipe_yaml, best))
    assert res.state == "pruned" and res.stop_at == res.items_used < res.items_planned
    assert res.items_used % 16 == 0
    # audited: the same stop point is recorded, every item is scored, the value is full
    audit = CandidateWorker(_spec(micro_zoo, tmp_path, rule=rule, audit=True))
    res2 = audit.score(CandidateRequest(0, req.recipe_yaml, best))
    assert res2.state == "complete" and res2.stop_at == res.stop_at
    assert res2.items_used == res2.items_planned and res2.full_fitness == full.fitness
    # with no best yet, nothing stops
    res3 = stop.score(CandidateRequest(0, req.recipe_yaml, None))
    assert res3.state == "complete" and res3.fitness == full.fitness

"""The repair is judged by the search's own scorer: ResidentFitness is a CandidateWorker,
and its score of a recipe equals the search's fitness of the same recipe."""

from __future__ import annotations

import numpy as np
import pytest

from darwinmerge.errors import ConfigError
from darwinmerge.evaluate.tasks import load_tasks
from darwinmerge.evolve.workers import CandidateRequest, CandidateWorker, WorkerSpec
from darwinmerge.health.fitness import ResidentFitness
from darwinmerge.merge.recipe import Recipe

from ..evolve.search_helpers import TwoGeneSpace, micro_zoo, write_mc_tasks  # noqa: F401

GENOMES = [[0.0, 0.0], [1.0, 1.0], [0.7, 0.1], [0.3, 0.9]]


def test_repair_scores_equal_the_search_fitness(micro_zoo, tmp_path):  # noqa: F811
    items = load_tasks(str(write_mc_tasks(tmp_path / "mc.jsonl")), split=None)
    space = TwoGeneSpace(micro_zoo / "father", micro_zoo / "mother")
    recipes = [space.decode(np.array(g)) for g in GENOMES]
    spec = WorkerSpec(
        parents=(("father", str(micro_zoo / "father")), ("mother", str(micro_zoo / "mother"))),
        base=None,
        items=tuple(items),
        categories=("sums", "words"),
        batch_size=32,
    )
    search = CandidateWorker(spec)
    want = [search.score(CandidateRequest(i, r.to_yaml())) for i, r in enumerate(recipes)]
    assert all(r.state == "complete" for r in want), [r.error for r in want]

    fitness = ResidentFitness(recipes[0], items, batch_size=32)
    assert isinstance(fitness.worker, CandidateWorker)
    got = [fitness(r) for r in reversed(recipes)][::-1]
    assert got == [r.fitness for r in want]
    # each score is the macro mean of its per-category accuracies
    for r, score in zip(want, got, strict=True):
        (k1, n1), (k2, n2) = r.categories["sums"], r.categories["words"]
        assert score == pytest.approx((k1 / n1 + k2 / n2) / 2, rel=1e-12)
    assert len(set(got)) > 1  # the genomes score differently: the comparison is not vacuous
    # the parents it holds are the loaded models whose weights the merge reads
    assert len(fitness.parents) == 2

    other = Recipe.parse(
        {**recipes[1].model_dump(mode="python"), "base": str(micro_zoo / "father")}
    )
    with pytest.raises(ConfigError, match="parents differ"):
        fitness(other)

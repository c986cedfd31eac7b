"""The real ``merge_and_score`` of the repair loop: the search's own candidate scorer
(:class:`~darwinmerge.evolve.workers.CandidateWorker`), so a repair is judged by the
same code as the search: parents resident once, each recipe re-merged in memory into
one resident child and scored on the given items (the caller passes the **fitness**
split) with the search's fitness (the macro mean over the items' categories), and the
child rescanned on probes for the re-check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from darwinmerge.dtypes import dtype_name
from darwinmerge.errors import ConfigError
from darwinmerge.evaluate import TaskItem
from darwinmerge.evolve.workers import CandidateWorker, WorkerSpec
from darwinmerge.merge.recipe import Recipe
from darwinmerge.mri.probes import ProbeBatches
from darwinmerge.mri.scan import Scan, ScanOptions, run_scan

__all__ = ["ResidentFitness"]


def _paths(recipe: Recipe) -> list[str]:
    return [p.path for p in recipe.parents] + ([recipe.base] if recipe.base else [])


class ResidentFitness:
    """A :class:`CandidateWorker` for the recipes of one child: every call merges
    ``recipe`` into the resident child and returns its fitness on ``items`` (``scorer``
    and ``score`` as in the search's :class:`WorkerSpec`; a run passes its search's).
    ``scan(recipe, batches)`` rescans the child.

    Recipes must keep the parents (names and paths) of the recipe it was built with.
    """

    def __init__(
        self,
        recipe: Recipe,
        items: Sequence[TaskItem],
        *,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 32,
        max_new_tokens: int = 32,
        scorer: str = "auto",
        score: str = "accuracy",
    ) -> None:
        self.items = list(items)
        self.paths = _paths(recipe)
        spec = WorkerSpec(
            parents=tuple((p.name, p.path) for p in recipe.parents),
            base=recipe.base,
            items=tuple(self.items),
            categories=tuple(sorted({it.category for it in self.items})),
            scorer=scorer,
            score=score,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            device=device,
            dtype=dtype_name(dtype),
            threads=torch.get_num_threads(),  # the caller's: the worker sets its own
        )
        self.worker = CandidateWorker(spec, "repair")
        self.backend: Any = self.worker.backend
        #: the resident parents (and base), as loaded models
        self.parents: list[Any] = self.worker.models

    def _check(self, recipe: Recipe) -> Recipe:
        if _paths(recipe) != self.paths:
            raise ConfigError("ResidentFitness: the recipe's parents differ from the loaded ones")
        return recipe

    def merge(self, recipe: Recipe) -> torch.nn.Module:
        """Merge ``recipe`` into the resident child and return it."""
        model: torch.nn.Module = self.worker.merged(self._check(recipe))
        return model

    def __call__(self, recipe: Recipe) -> float:
        return self.worker.fitness(self._check(recipe), self.items)[0]

    def scan(
        self,
        recipe: Recipe,
        batches: ProbeBatches,
        *,
        name: str = "child",
        options: ScanOptions | None = None,
    ) -> Scan:
        return run_scan(self.merge(recipe), batches, model_name=name, options=options)

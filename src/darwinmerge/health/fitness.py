"""The real ``merge_and_score`` of the repair loop: a resident child, re-merged in memory
for each recipe, scored with :class:`~darwinmerge.evaluate.TransformersBackend` on the
given items (the caller passes the **fitness** split), and rescanned on probes for the
re-check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from darwinmerge.evaluate import TaskItem, TransformersBackend, evaluate
from darwinmerge.merge.recipe import Recipe
from darwinmerge.mri.probes import ProbeBatches
from darwinmerge.mri.scan import Scan, ScanOptions, run_scan

__all__ = ["ResidentFitness"]


def _load(path: str, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


class ResidentFitness:
    """Parents loaded once; every call merges ``recipe`` into one resident child and
    returns its macro accuracy on ``items``. ``scan(recipe, batches)`` rescans the child.

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
    ) -> None:
        from darwinmerge.checkpoint.tokenizer import load_tokenizer
        from darwinmerge.merge.executor import StateDictSource

        self.items = list(items)
        self.paths = [p.path for p in recipe.parents] + ([recipe.base] if recipe.base else [])
        self.parents = [_load(p, dtype) for p in self.paths]
        self.sources = [StateDictSource.from_model(m) for m in self.parents]
        donor = recipe.parents[[p.name for p in recipe.parents].index(recipe.donor_name)].path
        child = _load(donor, dtype)
        self.backend = TransformersBackend(
            child,
            load_tokenizer(donor),
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
        )
        self._resident: Any = None
        try:  # the incremental resident merge, when the engine provides it
            from darwinmerge.merge.planner import match_parents
            from darwinmerge.merge.resident import ResidentMerge

            self._resident = ResidentMerge(
                self.backend.model, self.sources, match_parents(recipe, self.sources)
            )
        except ImportError:
            self._resident = None
        self.calls = 0

    def merge(self, recipe: Recipe) -> torch.nn.Module:
        """Merge ``recipe`` into the resident child and return it."""
        paths = [p.path for p in recipe.parents] + ([recipe.base] if recipe.base else [])
        if paths != self.paths:
            from darwinmerge.errors import ConfigError

            raise ConfigError("ResidentFitness: the recipe's parents differ from the loaded ones")
        if self._resident is not None:
            self._resident.apply(recipe)
        else:
            from darwinmerge.merge import merge_into, plan_merge

            merge_into(plan_merge(recipe, self.sources), self.sources, self.backend.model)
        model: torch.nn.Module = self.backend.model
        return model

    def __call__(self, recipe: Recipe) -> float:
        self.merge(recipe)
        self.calls += 1
        return float(evaluate(self.backend, self.items).overall.score)

    def scan(
        self,
        recipe: Recipe,
        batches: ProbeBatches,
        *,
        name: str = "child",
        options: ScanOptions | None = None,
    ) -> Scan:
        return run_scan(self.merge(recipe), batches, model_name=name, options=options)

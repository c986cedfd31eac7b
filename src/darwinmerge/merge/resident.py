"""Resident children: write tensors into a loaded model, and re-merge only what changed.

* :func:`~darwinmerge.checkpoint.model_writer.write_into_model` (below merging and
  scoring, in ``checkpoint/``; re-exported here) is the one function that writes tensors
  into a resident torch model (the in-memory merge, the evaluation backend's
  ``load_state`` and the MRI layer swap all go through it).
* :class:`ResidentMerge` keeps one child resident and applies recipe after recipe to it,
  re-merging only the tensors whose job changed since the previous recipe; the result
  is bit-identical to a fresh full merge of the last recipe.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from darwinmerge.checkpoint.model_writer import ModelWriter, write_into_model
from darwinmerge.errors import MergeError

__all__ = [
    "ApplyStats",
    "ModelWriter",
    "ResidentMerge",
    "job_signature",
    "write_into_dict",
    "write_into_model",
]


# --------------------------------------------------------------------- ResidentMerge


@dataclass(frozen=True)
class ApplyStats:
    """What one :meth:`ResidentMerge.apply` did: tensors merged, tensors kept, seconds."""

    merged: int
    skipped: int
    seconds: float


def _freeze(value: Any) -> Any:
    """A hashable, equality-preserving form of a job field (slices, dicts, dataclasses)."""
    if isinstance(value, slice):
        return ("slice", value.start, value.stop, value.step)
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, tuple | list):
        return tuple(_freeze(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return (type(value).__name__,) + tuple(
            _freeze(getattr(value, f)) for f in value.__dataclass_fields__
        )
    return value


def job_signature(job: Any, *, seed: int, out_dtype: torch.dtype | None, random: bool) -> Any:
    """Everything that determines a job's output tensor, as one hashable value: action,
    inputs, method, parameters, per-model parameters, overrides, base, group view, and
    for random methods the seed key with the recipe's seed."""
    return (
        job.action,
        _freeze(job.inputs),
        job.method,
        _freeze(job.params),
        _freeze(job.model_params),
        _freeze(job.overrides),
        _freeze(job.base),
        job.group_shape,
        job.group_dims,
        (job.seed_key, seed) if random else None,
        out_dtype,
        job.dtype,
    )


class ResidentMerge:
    """A resident child that recipes are applied to, re-merging only changed tensors.

    ``target`` is a loaded model (written in place with :func:`write_into_model`) or a
    dict (entries replaced); ``sources`` are the parents (then the base) the
    ``matching`` was built from (:func:`~darwinmerge.merge.planner.match_parents`).
    Each :meth:`apply` assigns the recipe to the matching, compares every job's
    signature (:func:`job_signature`) with the one that produced the tensor the child
    holds, and runs only the jobs that differ. The child must not be written by anything
    else in between (or call :meth:`forget`). A failed apply forgets everything: the
    next apply merges every tensor again.
    """

    def __init__(
        self,
        target: torch.nn.Module | MutableMapping[str, torch.Tensor],
        sources: Sequence[Any],
        matching: Any,
        *,
        device: str | torch.device | None = None,
        check_finite: bool = False,
        options: Any = None,
    ) -> None:
        from darwinmerge.merge.executor import InMemoryTarget
        from darwinmerge.merge.options import DEFAULT_OPTIONS

        self.target = target
        self.sources = list(sources)
        self.matching = matching
        self.check_finite = check_finite
        #: how jobs run (:class:`~darwinmerge.merge.options.MergeOptions`)
        self.options = options if options is not None else DEFAULT_OPTIONS
        self._into = InMemoryTarget(target, str(device) if device is not None else None)
        self._signatures: dict[str, Any] = {}
        #: the plan of the last successful apply
        self.plan: Any = None

    @property
    def device(self) -> str:
        """Where jobs run: the one given, else the model's device (``cpu`` for a dict)."""
        return self._into.device

    def forget(self) -> None:
        """Drop every remembered signature: the next apply merges every tensor."""
        self._signatures.clear()

    def apply(self, recipe: Any) -> ApplyStats:
        """Merge ``recipe`` into the resident child; returns what was merged and kept."""
        from darwinmerge.merge.executor import JobContext
        from darwinmerge.merge.ops import METHODS
        from darwinmerge.merge.planner import assign

        start = time.perf_counter()
        if self._into.refresh():  # moved: new storage
            self.forget()
        plan = assign(recipe, self.matching)
        ctx = JobContext.for_plan(
            plan,
            self.sources,
            device=self.device,
            check_finite=self.check_finite,
            options=self.options,
        )
        self._into.check_names(plan.jobs)
        sigs: dict[str, Any] = {}
        for job in plan.jobs:
            random = bool(job.method) and METHODS.get(job.method).random
            out_dtype = self._into.out_dtype(job, ctx.out_dtype)
            sigs[job.name] = job_signature(
                job, seed=recipe.seed, out_dtype=out_dtype, random=random
            )
        changed = {n for n, s in sigs.items() if self._signatures.get(n) != s}
        writer = self._into.writer
        if writer is not None:  # a tied group is written (and checked) whole
            for name in list(changed):
                changed.update(n for n in writer.tied.get(name, ()) if n in sigs)
        try:
            self._into.merge([job for job in plan.jobs if job.name in changed], ctx)
        except BaseException:
            self._signatures.clear()
            raise
        self._signatures.update((n, sigs[n]) for n in changed)
        self.plan = plan
        return ApplyStats(
            merged=len(changed),
            skipped=len(plan.jobs) - len(changed),
            seconds=time.perf_counter() - start,
        )


def write_into_dict(
    state: MutableMapping[str, torch.Tensor], name: str, out: torch.Tensor, *, copy: bool
) -> None:
    dst = state.get(name)
    if dst is None:
        # a plain copy may be the parent's own tensor: never hand that out
        state[name] = out.clone() if copy else out
        return
    if tuple(dst.shape) != tuple(out.shape):
        raise MergeError(
            f"in-memory merge: tensor {name} has shape {list(out.shape)} but the "
            f"target holds {list(dst.shape)}"
        )
    with torch.no_grad():
        dst.copy_(out)

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
    ) -> None:
        self.target = target
        self.sources = list(sources)
        self.matching = matching
        self.check_finite = check_finite
        self._writer: ModelWriter | None = None
        self._dict: MutableMapping[str, torch.Tensor] | None = None
        self._device = str(device) if device is not None else None
        if isinstance(target, torch.nn.Module):
            self._writer = ModelWriter(target)
        else:
            self._dict = target
        self._signatures: dict[str, Any] = {}
        #: the plan of the last successful apply
        self.plan: Any = None

    @property
    def device(self) -> str:
        """Where jobs run: the one given, else the model's device (``cpu`` for a dict)."""
        if self._device is not None:
            return self._device
        if self._writer is not None:
            first = next(iter(self._writer.state.values()), None)
            if first is not None:
                return str(first.device)
        return "cpu"

    def forget(self) -> None:
        """Drop every remembered signature: the next apply merges every tensor."""
        self._signatures.clear()

    def apply(self, recipe: Any) -> ApplyStats:
        """Merge ``recipe`` into the resident child; returns what was merged and kept."""
        from darwinmerge.merge.executor import DTYPES, run_job
        from darwinmerge.merge.ops import METHODS
        from darwinmerge.merge.planner import assign

        start = time.perf_counter()
        if self._writer is not None and self._writer.stale():  # moved: new storage
            self._writer = ModelWriter(self._writer.model)
            self.forget()
        plan = assign(recipe, self.matching)
        recipe_dtype = DTYPES[recipe.dtype] if recipe.dtype else None
        names = self.matching.names
        state = self._writer.state if self._writer is not None else self._dict
        assert state is not None
        if self._writer is not None:
            absent = [job.name for job in plan.jobs if job.name not in state]
            if absent:
                raise MergeError(
                    f"the resident model has no tensor {absent[0]} ({len(absent)} missing); "
                    "match with the donor whose layout and naming the model has"
                )
        jobs = []
        sigs: dict[str, Any] = {}
        for job in plan.jobs:
            dst = state.get(job.name)
            out_dtype = dst.dtype if dst is not None else (recipe_dtype or job.dtype)
            random = bool(job.method) and METHODS.get(job.method).random
            sig = job_signature(job, seed=recipe.seed, out_dtype=out_dtype, random=random)
            sigs[job.name] = sig
            jobs.append((job, out_dtype))
        changed = {n for n, s in sigs.items() if self._signatures.get(n) != s}
        if self._writer is not None:  # a tied group is written (and checked) whole
            for name in list(changed):
                changed.update(n for n in self._writer.tied.get(name, ()) if n in sigs)
        try:
            tied_out: dict[str, torch.Tensor] = {}
            with torch.no_grad():
                for job, out_dtype in jobs:
                    if job.name not in changed:
                        continue
                    dst = state.get(job.name)
                    tied = self._writer is not None and job.name in self._writer.tied
                    # straight into the child's storage: no full-size allocation
                    into = dst if dst is not None and not tied and dst.shape == job.shape else None
                    out = run_job(
                        job,
                        self.sources,
                        seed=recipe.seed,
                        out_dtype=out_dtype,
                        device=self.device,
                        check_finite=self.check_finite,
                        names=names,
                        out=into,
                    )
                    if into is not None:
                        self._signatures[job.name] = sigs[job.name]
                        continue
                    if self._writer is not None:
                        if job.name in self._writer.tied:
                            tied_out[job.name] = out
                        else:
                            self._writer.write({job.name: out})
                    else:
                        assert self._dict is not None
                        write_into_dict(self._dict, job.name, out, copy=job.action == "copy")
                    self._signatures[job.name] = sigs[job.name]
                if tied_out:
                    assert self._writer is not None
                    self._writer.write(tied_out)
        except BaseException:
            self._signatures.clear()
            raise
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

"""Carry out a MergePlan: streamed to disk with bounded memory, or in memory.

* Streaming: tensors are produced by a small thread pool (torch releases the GIL) with
  at most ``threads`` jobs in flight and written in plan order, so the output files do
  not depend on the thread count. Random masks (DARE / DELLA) use one generator per
  tensor seeded from ``(recipe.seed, canonical tensor name)``: any thread count gives
  bit-identical output.
* In memory: parents held resident (state dicts) are merged straight into a loaded
  model's parameters (or a dict), without writing a checkpoint; evolution and the MRI
  layer-swap scan call this many times.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from darwinmerge.errors import MergeError
from darwinmerge.merge.ops import METHODS, apply_method
from darwinmerge.merge.planner import Fetch, MergePlan, TensorJob, TensorSource
from darwinmerge.merge.resident import ModelWriter, write_into_dict

__all__ = [
    "StateDictSource",
    "execute_plan",
    "job_bytes",
    "job_seed",
    "realize",
    "run_job",
    "merge_into",
]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class StateDictSource:
    """A resident state dict seen through the TensorSource protocol (no copies)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> None:
        self._t = dict(tensors)
        self.config = dict(config)

    def keys(self) -> list[str]:
        return list(self._t)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._t[name].shape)

    def dtype(self, name: str) -> torch.dtype:
        return self._t[name].dtype

    def get(self, name: str) -> torch.Tensor:
        return self._t[name]

    def get_slice(self, name: str, index: tuple[Any, ...]) -> torch.Tensor:
        return self._t[name][index]

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> StateDictSource:
        config = getattr(model, "config", None)
        config = config.to_dict() if config is not None else {}
        return cls({k: v.detach() for k, v in model.state_dict().items()}, config)


def job_seed(seed: int, key: str) -> int:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def realize(
    fetch: Fetch, sources: Sequence[TensorSource], shape: tuple[int, ...] | None = None
) -> torch.Tensor:
    src = sources[fetch.source]
    if fetch.whole is not None:
        name, index = fetch.whole
        return src.get(name) if index == () else src.get_slice(name, index)
    first = fetch.pieces[0]
    part = src.get_slice(first[1], first[2]) if first[2] != () else src.get(first[1])
    if shape is None:
        raise MergeError("assembling a tensor from pieces needs its shape")
    out = torch.empty(shape, dtype=part.dtype, device=part.device)
    out[first[0]] = part
    for out_idx, name, idx in fetch.pieces[1:]:
        out[out_idx] = src.get_slice(name, idx) if idx != () else src.get(name)
    return out


def _check_finite(t: torch.Tensor, job: TensorJob, which: str) -> None:
    """NaN / inf check in one vectorised pass: min and max propagate NaN, and an inf is
    the min or the max (50x faster than ``isfinite(t).all()`` on bf16)."""
    if not t.is_floating_point() or t.numel() == 0:
        return
    lo, hi = torch.aminmax(t)
    if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
        raise MergeError(
            f"{which} has NaN or inf values in tensor {job.name}; repair that parent or "
            f"pass --no-check-finite to merge anyway"
        )


def run_job(
    job: TensorJob,
    sources: Sequence[TensorSource],
    *,
    seed: int,
    out_dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    check_finite: bool = True,
    names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Produce one output tensor (on ``device``, in ``out_dtype`` or the job's dtype)."""
    device = torch.device(device)

    def label(f: Fetch) -> str:
        return f"parent {names[f.source]!r}" if names else f"source {f.source}"

    inputs = []
    for f in job.inputs:
        t = realize(f, sources, job.shape).to(device, non_blocking=True)
        if check_finite:
            _check_finite(t, job, label(f))
        inputs.append(t)
    if job.action == "copy":
        out = inputs[0]
    else:
        base = None
        if job.base is not None:
            base = realize(job.base, sources, job.shape).to(device)
            if check_finite:
                _check_finite(base, job, label(job.base))
        if job.group_shape is not None:
            inputs = [t.reshape(job.group_shape) for t in inputs]
            base = base.reshape(job.group_shape) if base is not None else None
        generator = None
        if METHODS.get(job.method).random:
            generator = torch.Generator(device=device)
            generator.manual_seed(job_seed(seed, job.seed_key))
        out = apply_method(
            job.method,
            inputs,
            base=base,
            model_params=job.model_params,
            params=job.params,
            group_dims=job.group_dims,
            generator=generator,
        ).reshape(job.shape)
    if job.overrides:
        if any(out.data_ptr() == t.data_ptr() for t in inputs):
            out = out.clone()
        # many transplants into one fused tensor share a source: read each source once
        fetched: dict[str, torch.Tensor] = {}
        for out_idx, f, idx in job.overrides:
            key = repr(f)
            if key not in fetched:
                fetched[key] = realize(f, sources, job.shape if f.pieces else None)
            out[out_idx] = fetched[key][idx].to(device=device, dtype=out.dtype)
    return out.to(out_dtype or job.dtype)


def _iter_results(
    plan: MergePlan,
    sources: Sequence[TensorSource],
    *,
    threads: int,
    device: str,
    check_finite: bool,
) -> Iterator[tuple[TensorJob, torch.Tensor]]:
    names = [p.name for p in plan.recipe.parents] + (["base"] if plan.recipe.base else [])
    out_dtype = DTYPES[plan.recipe.dtype] if plan.recipe.dtype else None

    def work(job: TensorJob) -> torch.Tensor:
        with torch.no_grad():
            t = run_job(
                job,
                sources,
                seed=plan.recipe.seed,
                out_dtype=out_dtype,
                device=device,
                check_finite=check_finite,
                names=names,
            )
            return t.to("cpu")

    if threads <= 1:
        for job in plan.jobs:
            yield job, work(job)
        return
    # Memory bound: the tensors in flight together never exceed the largest one, so two
    # 1 GiB expert tensors are never merged at once (peak ~ one job's inputs + output),
    # while small tensors still run ``threads`` at a time. Output order is plan order.
    budget = max((job_bytes(j) for j in plan.jobs), default=0)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="darwin-merge") as pool:
        pending: deque[tuple[TensorJob, Future[torch.Tensor]]] = deque()
        in_flight = 0
        for job in plan.jobs:
            size = job_bytes(job)
            while pending and (len(pending) >= threads or in_flight + size > budget):
                done_job, fut = pending.popleft()
                in_flight -= job_bytes(done_job)
                yield done_job, fut.result()
                del fut  # the written output must not live on while the next job runs
            pending.append((job, pool.submit(work, job)))
            in_flight += size
        while pending:
            done_job, fut = pending.popleft()
            yield done_job, fut.result()


def job_bytes(job: TensorJob) -> int:
    """Bytes of one job's output tensor (its inputs are the same size each)."""
    n = 1
    for d in job.shape:
        n *= d
    return n * torch.empty((), dtype=job.dtype).element_size()


def execute_plan(
    plan: MergePlan,
    sources: Sequence[TensorSource],
    sink: Callable[[str, torch.Tensor], None],
    *,
    threads: int = 1,
    device: str = "cpu",
    check_finite: bool = True,
    progress: Callable[[TensorJob], None] | None = None,
) -> None:
    """Run every job and hand ``(name, tensor)`` to ``sink`` in plan order."""
    for job, tensor in _iter_results(
        plan, sources, threads=threads, device=device, check_finite=check_finite
    ):
        sink(job.name, tensor)
        del tensor  # written: free it before the next job's output is made
        if progress is not None:
            progress(job)


def merge_into(
    plan: MergePlan,
    sources: Sequence[TensorSource],
    target: torch.nn.Module | MutableMapping[str, torch.Tensor] | None = None,
    *,
    device: str | None = None,
    check_finite: bool = False,
) -> MutableMapping[str, torch.Tensor]:
    """Merge in memory. With a model, its parameters are overwritten in place through
    :func:`~darwinmerge.merge.resident.write_into_model` (names as in its state dict,
    fused expert layout included, tied weights written once and checked to agree);
    with a dict, tensors are copied into matching entries or added (in the recipe's
    dtype, else the donor's); returns the dict of
    merged tensors (the model's state dict for a model)."""
    writer: ModelWriter | None = None
    state: MutableMapping[str, torch.Tensor]
    if isinstance(target, torch.nn.Module):
        writer = ModelWriter(target)
        state = writer.state
        first = next(iter(writer.state.values()), None)
        dev = device or (str(first.device) if first is not None else "cpu")
    else:
        state = target if target is not None else {}
        dev = device or "cpu"
    names = [p.name for p in plan.recipe.parents] + (["base"] if plan.recipe.base else [])
    recipe_dtype = DTYPES[plan.recipe.dtype] if plan.recipe.dtype else None
    tied: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for job in plan.jobs:
            dst = state.get(job.name)
            if dst is None and writer is not None:
                raise MergeError(f"in-memory merge: the target model has no tensor {job.name}")
            out = run_job(
                job,
                sources,
                seed=plan.recipe.seed,
                out_dtype=dst.dtype if dst is not None else recipe_dtype,
                device=dev,
                check_finite=check_finite,
                names=names,
            )
            if writer is not None:
                if job.name in writer.tied:  # written together, so the values are checked
                    tied[job.name] = out
                else:
                    writer.write({job.name: out})
            else:
                write_into_dict(state, job.name, out, copy=job.action == "copy")
        if writer is not None and tied:
            writer.write(tied)
    return state

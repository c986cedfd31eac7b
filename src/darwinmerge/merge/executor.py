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
import math
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from darwinmerge.checkpoint.model_writer import ModelWriter
from darwinmerge.dtypes import DTYPE_NAMES, torch_dtype
from darwinmerge.errors import MergeError
from darwinmerge.merge.buffers import BufferPool
from darwinmerge.merge.ops import METHODS, apply_method
from darwinmerge.merge.ops.fused import intra_threads
from darwinmerge.merge.planner import Fetch, MergePlan, TensorJob, TensorSource
from darwinmerge.merge.resident import write_into_dict

__all__ = [
    "BLOCK_BYTES",
    "StateDictSource",
    "execute_plan",
    "job_blocks",
    "job_bytes",
    "job_memory",
    "job_seed",
    "realize",
    "realize_rows",
    "run_job",
    "merge_into",
]

#: dtype name -> torch dtype (the names of :mod:`darwinmerge.dtypes`)
DTYPES = {name: torch_dtype(name) for name in DTYPE_NAMES}


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


#: merge jobs on expert-grouped tensors run a block of whole experts at a time, each
#: block's inputs about this many bytes (in the job's dtype), so merging a 1 GiB fused
#: expert tensor holds its output plus a few blocks, not three 1 GiB inputs besides.
#: Every statistic is per expert, so the result does not depend on the blocks; random
#: methods draw each block's masks from a generator seeded from (seed, tensor, first
#: expert of the block), the first block's from (seed, tensor) as an unblocked job.
BLOCK_BYTES = 16 << 20
#: buffers above this size are kept idle in a merge's pool only while a job not yet
#: finished will take one of about their size (smaller ones serve the blocks of any job)
LARGE_BUFFER = 4 * BLOCK_BYTES


def job_blocks(job: TensorJob) -> list[tuple[int, int]] | None:
    """The expert blocks ``[(e0, e1), ...]`` a merge job runs in, or None for one piece.

    Only jobs grouped by expert (``group_dims >= 1``) over more than one block, whose
    every input can be read a block at a time (a fused tensor, or one tensor per expert:
    the layouts checkpoints use), are blocked; the partition depends on the job's shape and
    dtype alone, so random draws do not depend on threads or devices.
    """
    if job.action != "merge" or job.group_dims < 1 or len(job.shape) < 2:
        return None
    experts = job.shape[0]
    per_expert = job_bytes(job) // max(1, experts)
    step = max(1, BLOCK_BYTES // max(1, per_expert))
    if step >= experts:
        return None
    blocks = [(e0, min(experts, e0 + step)) for e0 in range(0, experts, step)]
    fetches = [*job.inputs, *([job.base] if job.base is not None else [])]
    if not all(_blockable(f, blocks) for f in fetches):
        return None
    return blocks


def _blockable(fetch: Fetch, blocks: list[tuple[int, int]]) -> bool:
    if fetch.whole is not None:
        index = fetch.whole[1]
        return index == () or (isinstance(index[0], slice) and index[0].step in (None, 1))
    for out_idx, _, _ in fetch.pieces:
        if not out_idx:
            return False
        lead = out_idx[0]
        if isinstance(lead, slice):
            lo, hi = lead.start or 0, lead.stop
            if lead.step not in (None, 1) or hi is None:
                return False
            if not any(e0 <= lo and hi <= e1 for e0, e1 in blocks):
                return False
        elif not isinstance(lead, int):
            return False
    return True


def realize_rows(
    fetch: Fetch,
    sources: Sequence[TensorSource],
    shape: tuple[int, ...],
    e0: int,
    e1: int,
    buffers: BufferPool | None = None,
) -> torch.Tensor:
    """Rows ``[e0, e1)`` (leading axis) of :func:`realize`'s tensor, reading only those
    rows (the fetch must pass :func:`job_blocks`'s check). With ``buffers``, a gathered
    block is assembled in a pool buffer and the pieces read for it go back to the pool."""
    src = sources[fetch.source]
    if fetch.whole is not None:
        name, index = fetch.whole
        if index == ():
            return src.get_slice(name, (slice(e0, e1),))
        lead = index[0]
        start = lead.start or 0
        return src.get_slice(name, (slice(start + e0, start + e1), *index[1:]))
    out: torch.Tensor | None = None
    for out_idx, name, idx in fetch.pieces:
        lead = out_idx[0]
        lo, hi = (lead.start or 0, lead.stop) if isinstance(lead, slice) else (lead, lead + 1)
        if not (e0 <= lo and hi <= e1):
            continue
        part = src.get_slice(name, idx) if idx != () else src.get(name)
        if out is None:
            rows = (e1 - e0, *shape[1:])
            if buffers is not None and part.device.type == "cpu":
                nbytes = math.prod(rows) * part.element_size()
                out = buffers.take(nbytes).view(part.dtype).view(rows)
            else:
                out = torch.empty(rows, dtype=part.dtype, device=part.device)
        shifted = slice(lo - e0, hi - e0) if isinstance(lead, slice) else lead - e0
        out[(shifted, *out_idx[1:])] = part
        if buffers is not None:
            buffers.give(part)
    if out is None:
        raise MergeError(f"no stored piece covers rows {e0}:{e1} of the fetch")
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
    out: torch.Tensor | None = None,
    buffers: BufferPool | None = None,
    read_threads: int = 1,
) -> torch.Tensor:
    """Produce one output tensor (on ``device``, in ``out_dtype`` or the job's dtype).

    With ``out`` (the job's shape, on ``device``; never a parent's own tensor) the result
    is written into it and it is returned: the resident child's storage, so a candidate
    costs no full-size allocation. Same values as without ``out`` then ``.to(out.dtype)``.
    Expert tensors run a block of experts at a time (:data:`BLOCK_BYTES`). With
    ``buffers`` (a merge to disk) the gathered blocks come from it and the inputs'
    buffers go back to it once merged (the caller passes a pool buffer as ``out``).
    ``read_threads`` > 1 reads a whole (not blocked) job's inputs side by side (a job
    that runs alone).
    """
    device = torch.device(device)
    if out is not None:
        if tuple(out.shape) != tuple(job.shape):
            raise MergeError(
                f"tensor {job.name}: output has shape {tuple(out.shape)}, the job {job.shape}"
            )
        if not out.is_contiguous() or out.device != device:
            made = run_job(
                job,
                sources,
                seed=seed,
                out_dtype=out.dtype,
                device=device,
                check_finite=check_finite,
                names=names,
            )
            return out.copy_(made)
    dtype = out.dtype if out is not None else (out_dtype or job.dtype)

    def label(f: Fetch) -> str:
        return f"parent {names[f.source]!r}" if names else f"source {f.source}"

    def fetch(f: Fetch, rows: tuple[int, int] | None) -> torch.Tensor:
        if rows is None:
            t = realize(f, sources, job.shape)
        else:
            t = realize_rows(f, sources, job.shape, *rows, buffers=buffers)
        t = t.to(device, non_blocking=True)
        if check_finite:
            _check_finite(t, job, label(f))
        return t

    Inputs = tuple[list[torch.Tensor], torch.Tensor | None]

    fetches = [*job.inputs, *([job.base] if job.base is not None else [])]

    def split(got: list[torch.Tensor]) -> Inputs:
        """The inputs read, in ``fetches`` order, as (models, base)."""
        return (got[:-1], got[-1]) if job.base is not None else (got, None)

    def read_whole() -> Inputs:
        if read_threads > 1 and len(fetches) > 1:
            with ThreadPoolExecutor(read_threads, thread_name_prefix="darwin-read") as pool:
                return split(list(pool.map(lambda f: fetch(f, None), fetches)))
        return split([fetch(f, None) for f in fetches])

    def merge(rows: tuple[int, int] | None, into: torch.Tensor | None, got: Inputs) -> torch.Tensor:
        inputs, base = got
        lead = job.shape[0] if rows is None else rows[1] - rows[0]
        group_shape = (lead, *job.group_shape[1:]) if job.group_shape is not None else None
        if group_shape is not None:
            inputs = [t.reshape(group_shape) for t in inputs]
            base = base.reshape(group_shape) if base is not None else None
        generator = None
        if METHODS.get(job.method).random:
            generator = torch.Generator(device=device)
            key = job.seed_key if rows is None or rows[0] == 0 else f"{job.seed_key}#{rows[0]}"
            generator.manual_seed(job_seed(seed, key))
        target = None
        if into is not None:
            target = into.view(group_shape) if group_shape is not None else into
        result = apply_method(
            job.method,
            inputs,
            base=base,
            model_params=job.model_params,
            params=job.params,
            group_dims=job.group_dims,
            generator=generator,
            out=target,
        )
        if into is not None:
            return into
        if any(result.data_ptr() == t.data_ptr() for t in [*inputs, base] if t is not None):
            result = result.clone()  # never hand out (or later write into) a parent's tensor
        return result.reshape(job.shape)

    def recycle(got: Inputs, result: torch.Tensor) -> None:
        """Give the merged inputs' buffers back (never one the result lives in)."""
        if buffers is None:
            return
        keep = result.untyped_storage().data_ptr()
        for t in [*got[0], got[1]]:
            if t is not None and t.untyped_storage().data_ptr() != keep:
                buffers.give(t)

    if job.action == "copy":
        source = fetch(job.inputs[0], None)
        result = out.copy_(source) if out is not None else source
    else:
        blocks = job_blocks(job)
        if blocks is None:
            got = read_whole()
            result = merge(None, out, got)
            recycle(got, result)
            del got
        else:
            result = out if out is not None else torch.empty(job.shape, dtype=dtype, device=device)

            # the next block is read (disk, expert gather) while this one is merged, its
            # inputs side by side (one read at a time leaves the disk idle between them)
            def ahead_of(rows: tuple[int, int]) -> list[Future[torch.Tensor]]:
                return [reader.submit(fetch, f, rows) for f in fetches]

            def arrived(futures: list[Future[torch.Tensor]]) -> Inputs:
                return split([f.result() for f in futures])

            with ThreadPoolExecutor(len(fetches), thread_name_prefix="darwin-read") as reader:
                ahead = ahead_of(blocks[0])
                for i, (e0, e1) in enumerate(blocks):
                    got = arrived(ahead)
                    if i + 1 < len(blocks):
                        ahead = ahead_of(blocks[i + 1])
                    merge((e0, e1), result[e0:e1], got)
                    recycle(got, result)
                    del got
    if job.overrides:
        if out is None and job.action == "copy":
            result = result.clone()  # never write into a parent's own tensor
        # many transplants into one fused tensor share a source: read each source once
        fetched: dict[str, torch.Tensor] = {}
        for out_idx, f, idx in job.overrides:
            key = repr(f)
            if key not in fetched:
                fetched[key] = realize(f, sources, job.shape if f.pieces else None)
            result[out_idx] = fetched[key][idx].to(device=device, dtype=result.dtype)
    return result if out is not None else result.to(dtype)


def _iter_results(
    plan: MergePlan,
    sources: Sequence[TensorSource],
    *,
    threads: int,
    device: str,
    check_finite: bool,
    buffers: BufferPool | None = None,
) -> Iterator[tuple[TensorJob, torch.Tensor]]:
    """Run the plan's jobs, yielding ``(job, output)`` in plan order. With ``buffers`` the
    outputs are made in its buffers and go back to it when the consumer asks for the
    next one (it must not keep them), and its idle buffers count against the budget."""
    names = [p.name for p in plan.recipe.parents] + (["base"] if plan.recipe.base else [])
    out_dtype = DTYPES[plan.recipe.dtype] if plan.recipe.dtype else None
    on_cpu = torch.device(device).type == "cpu"

    def out_bytes(job: TensorJob) -> int:
        """Bytes of the output a pool buffer is taken for (0: the job makes its own)."""
        if buffers is None or not on_cpu or job.action != "merge":
            return 0
        dtype = out_dtype or job.dtype
        return math.prod(job.shape) * torch.empty((), dtype=dtype).element_size()

    def takes(job: TensorJob) -> list[int]:
        """Buffer sizes the job will take from the pool: its output, and its inputs when
        it reads them whole (about the output's size each)."""
        sizes = [out_bytes(job)] if out_bytes(job) else []
        if job_blocks(job) is None:
            sizes += [job_bytes(job)] * (len(job.inputs) + (job.base is not None))
        return sizes

    def output(job: TensorJob) -> torch.Tensor | None:
        nbytes = out_bytes(job)
        if buffers is None or not nbytes:
            return None
        return buffers.take(nbytes).view(out_dtype or job.dtype).view(job.shape)

    def work(job: TensorJob, out: torch.Tensor | None = None, alone: bool = False) -> torch.Tensor:
        # a job that takes the whole budget runs alone: it gets every thread
        inner = threads if alone else 1
        with torch.no_grad(), intra_threads(inner):
            t = run_job(
                job,
                sources,
                seed=plan.recipe.seed,
                out_dtype=out_dtype,
                device=device,
                check_finite=check_finite,
                names=names,
                out=out,
                buffers=buffers,
                read_threads=inner,
            )
            return t.to("cpu")

    if threads <= 1:
        for job in plan.jobs:
            result = work(job, output(job))
            yield job, result
            if buffers is not None:
                buffers.give(result)
            del result
        return
    # Memory bound: the jobs in flight plus the output being written never hold more
    # than the most memory one job needs alone (job_memory: a 1 GiB embedding's TIES
    # holds three inputs and its output; a blocked expert job its output and two blocks),
    # so two 1 GiB tensors are never merged at once, while the next jobs run as an output
    # is written and small tensors run ``threads`` at a time. Output order is plan order.
    memory = {job.name: job_memory(job) for job in plan.jobs}
    budget = max(memory.values(), default=0)
    if buffers is not None:
        buffers.max_idle = budget
    todo = deque(plan.jobs)
    # the large buffers the jobs not yet finished will take, by size: once none wants an
    # idle buffer's size, the pool frees it (see BufferPool.drop_unwanted)
    wanted: Counter[int] = Counter(n for job in todo for n in takes(job) if n > LARGE_BUFFER)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="darwin-merge") as pool:
        pending: deque[tuple[TensorJob, Future[torch.Tensor]]] = deque()
        held = 0  # bytes: the pending jobs' memory + the output being written

        def fill() -> None:
            nonlocal held
            while todo and len(pending) < 4 * threads:  # done ones wait for their turn
                need = memory[todo[0].name]
                if held and held + need > budget:
                    return
                job = todo.popleft()
                out = None
                if buffers is not None:
                    buffers.drop_unwanted({n for n, k in wanted.items() if k > 0}, LARGE_BUFFER)
                    # idle buffers count against the budget, except those this job will
                    # reuse (its output, its whole inputs): the others go first
                    spare = buffers.reusable(takes(job))
                    over = held + need + buffers.idle - sum(n * k for n, k in spare.items())
                    if over > budget:
                        buffers.evict(over - budget, spare=spare)
                    out = output(job)  # taken now: no other job can take it meanwhile
                pending.append((job, pool.submit(work, job, out, need >= budget)))
                held += need

        fill()
        while pending:
            done_job, fut = pending.popleft()
            result = fut.result()
            del fut
            held += job_bytes(done_job) - memory[done_job.name]  # only its output is left
            wanted.subtract(n for n in takes(done_job) if n > LARGE_BUFFER)  # all taken
            fill()  # the next jobs run while this output is written
            yield done_job, result
            if buffers is not None:
                buffers.give(result)  # written: its buffer serves a later job
            del result  # written: it must not live on while the next jobs run
            held -= job_bytes(done_job)
            fill()


def alone_first(jobs: Sequence[TensorJob]) -> list[TensorJob]:
    """The jobs that need the most memory (they run alone: an embedding's and
    ``lm_head``'s whole-tensor merges) first, back to back, then the rest, each group in
    plan order. For a merge to disk (safetensors files do not care about tensor order):
    the second reuses the first's buffers, and neither is left to run alone at the end."""
    memory = [job_memory(j) for j in jobs]
    most = max(memory, default=0)
    return [j for j, m in zip(jobs, memory, strict=True) if m == most] + [
        j for j, m in zip(jobs, memory, strict=True) if m != most
    ]


def job_memory(job: TensorJob) -> int:
    """Bytes one job holds at its peak (estimated in the job's dtype): its output plus two
    blocks of every input when blocked (one merged, one read ahead), else its output plus
    every whole input."""
    size = job_bytes(job)
    fetches = len(job.inputs) + (1 if job.base is not None else 0)
    blocks = job_blocks(job)
    if blocks is None:
        return size * (1 + fetches)
    widest = max(e1 - e0 for e0, e1 in blocks)
    return size + 2 * fetches * (size // job.shape[0]) * widest


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
    buffers: BufferPool | None = None,
) -> None:
    """Run every job and hand ``(name, tensor)`` to ``sink`` in plan order. With ``buffers``
    (:class:`~darwinmerge.merge.buffers.BufferPool`) buffers are recycled: ``sink`` must
    be done with each tensor when it returns (a writer that writes it, not one that
    keeps it)."""
    for job, tensor in _iter_results(
        plan, sources, threads=threads, device=device, check_finite=check_finite, buffers=buffers
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
            # straight into the target's storage unless tied (those are written together)
            in_place = dst is not None and tuple(dst.shape) == job.shape
            into = dst if in_place and (writer is None or job.name not in writer.tied) else None
            out = run_job(
                job,
                sources,
                seed=plan.recipe.seed,
                out_dtype=dst.dtype if dst is not None else recipe_dtype,
                device=dev,
                check_finite=check_finite,
                names=names,
                out=into,
            )
            if into is not None:
                continue
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

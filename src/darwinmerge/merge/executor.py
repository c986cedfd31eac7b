"""Carry out a MergePlan: streamed to disk with bounded memory, or in memory.

* Streaming: tensors are produced by a small thread pool (torch releases the GIL) with
  at most ``threads`` jobs in flight and written in plan order, so the output files do
  not depend on the thread count. Random masks (DARE / DELLA) use one generator per
  tensor seeded from ``(recipe.seed, canonical tensor name)``: any thread count gives
  bit-identical output.
* In memory: parents held resident (state dicts) are merged straight into a loaded
  model's parameters (or a dict), without writing a checkpoint; evolution and the MRI
  layer-swap scan call this many times (:class:`InMemoryTarget`).

Pieces: :class:`JobContext` (what every job of a merge shares, one object passed down),
:class:`JobRun` (one job: read, merge through :func:`~darwinmerge.merge.kernels.run_method`,
write), :class:`Scheduler` (memory budget, admission, eviction, read-ahead).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import torch

from darwinmerge.checkpoint.model_writer import ModelWriter
from darwinmerge.dtypes import DTYPE_NAMES, torch_dtype
from darwinmerge.errors import MergeError
from darwinmerge.merge.buffers import BufferPool
from darwinmerge.merge.kernels import run_method
from darwinmerge.merge.ops import METHODS
from darwinmerge.merge.options import DEFAULT_OPTIONS, KernelContext, MergeOptions
from darwinmerge.merge.planner import Fetch, MergePlan, TensorJob, TensorSource
from darwinmerge.merge.resident import write_into_dict

__all__ = [
    "BLOCK_BYTES",
    "InMemoryTarget",
    "JobContext",
    "JobRun",
    "Scheduler",
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


@dataclass(frozen=True)
class JobContext:
    """What every job of one merge shares, passed down as one object: the sources, the
    recipe's seed (random masks), where and in which dtype outputs are made, whether
    inputs are checked for NaN / inf, the parents' names (messages), the buffer pool of a
    merge to disk, the merge's options and the threads one job may use inside itself
    (reads side by side, the ``numba`` mix pass; 1 unless the job runs alone)."""

    sources: Sequence[TensorSource]
    seed: int = 0
    device: torch.device = torch.device("cpu")
    out_dtype: torch.dtype | None = None
    check_finite: bool = True
    names: Sequence[str] | None = None
    buffers: BufferPool | None = None
    options: MergeOptions = DEFAULT_OPTIONS
    threads: int = 1

    @classmethod
    def for_plan(
        cls, plan: MergePlan, sources: Sequence[TensorSource], **fields: Any
    ) -> JobContext:
        """The context of ``plan``'s jobs: its seed, dtype and parent names; ``fields``
        as in the class (``device`` may be a string)."""
        recipe = plan.recipe
        names = [p.name for p in recipe.parents] + (["base"] if recipe.base else [])
        fields.setdefault("out_dtype", DTYPES[recipe.dtype] if recipe.dtype else None)
        fields["device"] = torch.device(fields.get("device", "cpu"))
        return cls(sources, seed=recipe.seed, names=names, **fields)

    def label(self, fetch: Fetch) -> str:
        return f"parent {self.names[fetch.source]!r}" if self.names else f"source {fetch.source}"


#: a job's inputs as read, in fetch order: (the models' tensors, the base or None)
Inputs = tuple[list[torch.Tensor], torch.Tensor | None]


class JobRun:
    """Produces one job's output tensor (see :func:`run_job`)."""

    def __init__(self, job: TensorJob, ctx: JobContext) -> None:
        self.job = job
        self.ctx = ctx
        self.fetches = [*job.inputs, *([job.base] if job.base is not None else [])]

    def run(self, out: torch.Tensor | None = None) -> torch.Tensor:
        job, ctx = self.job, self.ctx
        if out is not None:
            if tuple(out.shape) != tuple(job.shape):
                raise MergeError(
                    f"tensor {job.name}: output has shape {tuple(out.shape)}, the job {job.shape}"
                )
            if not out.is_contiguous() or out.device != ctx.device:
                alone = replace(ctx, out_dtype=out.dtype, buffers=None, threads=1)
                made = JobRun(job, alone).run()
                return out.copy_(made)
        dtype = out.dtype if out is not None else (ctx.out_dtype or job.dtype)
        if job.action == "copy":
            source = self.fetch(job.inputs[0], None)
            result = out.copy_(source) if out is not None else source
        else:
            blocks = job_blocks(job)
            if blocks is None:
                result = self.merge_whole(out)
            else:
                if out is None:
                    out = torch.empty(job.shape, dtype=dtype, device=ctx.device)
                result = self.merge_blocks(blocks, out)
        if job.overrides:
            if out is None and job.action == "copy":
                result = result.clone()  # never write into a parent's own tensor
            self.apply_overrides(result)
        return result if out is not None else result.to(dtype)

    def fetch(self, f: Fetch, rows: tuple[int, int] | None) -> torch.Tensor:
        """One input on the job's device (rows ``[e0, e1)`` of it, or whole), checked."""
        job, ctx = self.job, self.ctx
        if rows is None:
            t = realize(f, ctx.sources, job.shape)
        else:
            t = realize_rows(f, ctx.sources, job.shape, *rows, buffers=ctx.buffers)
        t = t.to(ctx.device, non_blocking=True)
        if ctx.check_finite:
            _check_finite(t, job, ctx.label(f))
        return t

    def split(self, got: list[torch.Tensor]) -> Inputs:
        """The inputs read, in fetch order, as (models, base)."""
        return (got[:-1], got[-1]) if self.job.base is not None else (got, None)

    def merge_whole(self, out: torch.Tensor | None) -> torch.Tensor:
        """An unblocked merge: every input read whole (side by side with threads)."""
        if self.ctx.threads > 1 and len(self.fetches) > 1:
            with ThreadPoolExecutor(self.ctx.threads, thread_name_prefix="darwin-read") as pool:
                reads = [pool.submit(self.fetch, f, None) for f in self.fetches]
                got = self.split([r.result() for r in reads])
        else:
            got = self.split([self.fetch(f, None) for f in self.fetches])
        result = self.merge(None, out, got)
        self.recycle(got, result)
        return result

    def merge_blocks(self, blocks: list[tuple[int, int]], out: torch.Tensor) -> torch.Tensor:
        """A blocked merge into ``out``: the next block is read (disk, expert gather)
        while this one is merged, its inputs side by side (one read at a time leaves the
        disk idle between them)."""
        fetches = self.fetches
        with ThreadPoolExecutor(len(fetches), thread_name_prefix="darwin-read") as reader:
            ahead = [reader.submit(self.fetch, f, blocks[0]) for f in fetches]
            for i, (e0, e1) in enumerate(blocks):
                got = self.split([f.result() for f in ahead])
                if i + 1 < len(blocks):
                    ahead = [reader.submit(self.fetch, f, blocks[i + 1]) for f in fetches]
                self.merge((e0, e1), out[e0:e1], got)
                self.recycle(got, out)
                del got
        return out

    def merge(
        self, rows: tuple[int, int] | None, into: torch.Tensor | None, got: Inputs
    ) -> torch.Tensor:
        """The method over rows ``[e0, e1)`` (or everything), into ``into`` if given."""
        job, ctx = self.job, self.ctx
        inputs, base = got
        lead = job.shape[0] if rows is None else rows[1] - rows[0]
        group_shape = (lead, *job.group_shape[1:]) if job.group_shape is not None else None
        if group_shape is not None:
            inputs = [t.reshape(group_shape) for t in inputs]
            base = base.reshape(group_shape) if base is not None else None
        generator = None
        if METHODS.get(job.method).random:
            generator = torch.Generator(device=ctx.device)
            key = job.seed_key if rows is None or rows[0] == 0 else f"{job.seed_key}#{rows[0]}"
            generator.manual_seed(job_seed(ctx.seed, key))
        target = None
        if into is not None:
            target = into.view(group_shape) if group_shape is not None else into
        result = run_method(
            job.method,
            inputs,
            base=base,
            model_params=job.model_params,
            params=job.params,
            group_dims=job.group_dims,
            generator=generator,
            out=target,
            ctx=KernelContext(ctx.options, ctx.threads),
        )
        if into is not None:
            return into
        if any(result.data_ptr() == t.data_ptr() for t in [*inputs, base] if t is not None):
            result = result.clone()  # never hand out (or later write into) a parent's tensor
        return result.reshape(job.shape)

    def recycle(self, got: Inputs, result: torch.Tensor) -> None:
        """Give the merged inputs' buffers back (never one the result lives in)."""
        buffers = self.ctx.buffers
        if buffers is None:
            return
        keep = result.untyped_storage().data_ptr()
        for t in [*got[0], got[1]]:
            if t is not None and t.untyped_storage().data_ptr() != keep:
                buffers.give(t)

    def apply_overrides(self, result: torch.Tensor) -> None:
        """Expert transplants; many into one fused tensor share a source: read it once."""
        job, ctx = self.job, self.ctx
        fetched: dict[str, torch.Tensor] = {}
        for out_idx, f, idx in job.overrides:
            key = repr(f)
            if key not in fetched:
                fetched[key] = realize(f, ctx.sources, job.shape if f.pieces else None)
            result[out_idx] = fetched[key][idx].to(device=ctx.device, dtype=result.dtype)


def run_job(
    job: TensorJob,
    ctx: JobContext | Sequence[TensorSource],
    *,
    out: torch.Tensor | None = None,
    **fields: Any,
) -> torch.Tensor:
    """Produce one output tensor (on the context's device, in its ``out_dtype`` or the
    job's dtype). ``ctx`` is a :class:`JobContext`, or the sources with the context's
    other fields as keywords (``seed=``, ``device=`` ...).

    With ``out`` (the job's shape, on the device; never a parent's own tensor) the result
    is written into it and it is returned: the resident child's storage, so a candidate
    costs no full-size allocation. Same values as without ``out`` then ``.to(out.dtype)``.
    Expert tensors run a block of experts at a time (:data:`BLOCK_BYTES`). With the
    context's ``buffers`` (a merge to disk) the gathered blocks come from the pool and the
    inputs' buffers go back to it once merged (the caller passes a pool buffer as
    ``out``). ``threads`` > 1 reads a whole (not blocked) job's inputs side by side.
    """
    if not isinstance(ctx, JobContext):
        if "device" in fields:
            fields["device"] = torch.device(fields["device"])
        ctx = JobContext(ctx, **fields)
    return JobRun(job, ctx).run(out)


class Scheduler:
    """Runs a plan's jobs on a thread pool and yields their outputs in plan order, within
    a memory budget.

    * **budget**: the jobs in flight plus the output being written never hold more than
      the most memory one job needs alone (:func:`job_memory`: a 1 GiB embedding's TIES
      holds three inputs and its output; a blocked expert job its output and two
      blocks), so two 1 GiB tensors are never merged at once, while small tensors run
      ``threads`` at a time;
    * **admission**: the next job in plan order starts when its memory fits (or nothing
      else is held); a job that needs the whole budget runs alone, with every thread;
    * **eviction** (a merge to disk, with a buffer pool): idle buffers count against the
      budget, except those the next job will reuse; the others are freed first, and a
      large idle buffer is freed once no job left wants its size;
    * **read-ahead**: the next jobs run while an output is written (up to ``4 threads``
      jobs queued).
    """

    def __init__(self, jobs: Sequence[TensorJob], ctx: JobContext, threads: int) -> None:
        self.ctx = ctx
        self.threads = threads
        self.todo = deque(jobs)
        self.memory = {job.name: job_memory(job) for job in jobs}
        self.budget = max(self.memory.values(), default=0)
        self.held = 0  # bytes: the pending jobs' memory + the output being written
        self.pending: deque[tuple[TensorJob, Future[torch.Tensor]]] = deque()
        self.on_cpu = ctx.device.type == "cpu"
        # the large buffers the jobs not yet finished will take, by size
        self.wanted: Counter[int] = Counter(
            n for job in jobs for n in self.takes(job) if n > LARGE_BUFFER
        )
        if ctx.buffers is not None:
            ctx.buffers.max_idle = self.budget

    def out_bytes(self, job: TensorJob) -> int:
        """Bytes of the output a pool buffer is taken for (0: the job makes its own)."""
        if self.ctx.buffers is None or not self.on_cpu or job.action != "merge":
            return 0
        dtype = self.ctx.out_dtype or job.dtype
        return math.prod(job.shape) * torch.empty((), dtype=dtype).element_size()

    def takes(self, job: TensorJob) -> list[int]:
        """Buffer sizes the job will take from the pool: its output, and its inputs when
        it reads them whole (about the output's size each)."""
        sizes = [self.out_bytes(job)] if self.out_bytes(job) else []
        if job_blocks(job) is None:
            sizes += [job_bytes(job)] * (len(job.inputs) + (job.base is not None))
        return sizes

    def output(self, job: TensorJob) -> torch.Tensor | None:
        """A pool buffer for the job's output (None: the job makes its own)."""
        nbytes = self.out_bytes(job)
        if self.ctx.buffers is None or not nbytes:
            return None
        dtype = self.ctx.out_dtype or job.dtype
        return self.ctx.buffers.take(nbytes).view(dtype).view(job.shape)

    def work(self, job: TensorJob, out: torch.Tensor | None, alone: bool) -> torch.Tensor:
        """Run one job (a job that runs alone gets every thread inside it)."""
        ctx = replace(self.ctx, threads=self.threads if alone else 1)
        with torch.no_grad():
            return run_job(job, ctx, out=out).to("cpu")

    def results(self) -> Iterator[tuple[TensorJob, torch.Tensor]]:
        """``(job, output)`` in plan order. With a buffer pool the outputs are made in its
        buffers and go back to it when the consumer asks for the next one (it must not
        keep them)."""
        if self.threads <= 1:
            yield from self._one_at_a_time()
            return
        with ThreadPoolExecutor(self.threads, thread_name_prefix="darwin-merge") as pool:
            self.admit(pool)
            while self.pending:
                job, result = self.collect()
                self.admit(pool)  # the next jobs run while this output is written
                yield job, result
                self.release(job, result)
                del result  # written: it must not live on while the next jobs run
                self.admit(pool)

    def _one_at_a_time(self) -> Iterator[tuple[TensorJob, torch.Tensor]]:
        for job in self.todo:
            result = self.work(job, self.output(job), alone=False)
            yield job, result
            if self.ctx.buffers is not None:
                self.ctx.buffers.give(result)
            del result

    def admit(self, pool: ThreadPoolExecutor) -> None:
        """Start the next jobs in plan order while they fit the budget."""
        buffers = self.ctx.buffers
        while self.todo and len(self.pending) < 4 * self.threads:  # done ones wait their turn
            need = self.memory[self.todo[0].name]
            if self.held and self.held + need > self.budget:
                return
            job = self.todo.popleft()
            if buffers is not None:
                self.evict(job, need)
            out = self.output(job)  # taken now: no other job can take it meanwhile
            self.pending.append((job, pool.submit(self.work, job, out, need >= self.budget)))
            self.held += need

    def evict(self, job: TensorJob, need: int) -> None:
        """Free idle buffers so that they, the held bytes and ``need`` fit the budget;
        those ``job`` will reuse (its output, its whole inputs) go last."""
        buffers = self.ctx.buffers
        assert buffers is not None
        buffers.drop_unwanted({n for n, k in self.wanted.items() if k > 0}, LARGE_BUFFER)
        spare = buffers.reusable(self.takes(job))
        over = self.held + need + buffers.idle - sum(n * k for n, k in spare.items())
        if over > self.budget:
            buffers.evict(over - self.budget, spare=spare)

    def collect(self) -> tuple[TensorJob, torch.Tensor]:
        """The oldest pending job's output; only that output is held afterwards."""
        job, fut = self.pending.popleft()
        result = fut.result()
        self.held += job_bytes(job) - self.memory[job.name]
        self.wanted.subtract(n for n in self.takes(job) if n > LARGE_BUFFER)  # all taken
        return job, result

    def release(self, job: TensorJob, result: torch.Tensor) -> None:
        """The output is written: its buffer serves a later job, its bytes are free."""
        if self.ctx.buffers is not None:
            self.ctx.buffers.give(result)
        self.held -= job_bytes(job)


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
    options: MergeOptions = DEFAULT_OPTIONS,
) -> None:
    """Run every job and hand ``(name, tensor)`` to ``sink`` in plan order. With ``buffers``
    (:class:`~darwinmerge.merge.buffers.BufferPool`) buffers are recycled: ``sink`` must
    be done with each tensor when it returns (a writer that writes it, not one that
    keeps it)."""
    ctx = JobContext.for_plan(
        plan, sources, device=device, check_finite=check_finite, buffers=buffers, options=options
    )
    for job, tensor in Scheduler(plan.jobs, ctx, threads).results():
        sink(job.name, tensor)
        del tensor  # written: free it before the next job's output is made
        if progress is not None:
            progress(job)


class InMemoryTarget:
    """A loaded model (written through :class:`~darwinmerge.merge.resident.ModelWriter`:
    names as in its state dict, tied weights written once and checked to agree) or a dict
    (tensors copied into matching entries or added) that jobs are merged into: the one
    in-memory path of :func:`merge_into` and :class:`~darwinmerge.merge.resident.ResidentMerge`.
    """

    def __init__(
        self,
        target: torch.nn.Module | MutableMapping[str, torch.Tensor] | None,
        device: str | None = None,
    ) -> None:
        self.writer: ModelWriter | None = None
        self.state: MutableMapping[str, torch.Tensor]
        if isinstance(target, torch.nn.Module):
            self.writer = ModelWriter(target)
            self.state = self.writer.state
        else:
            self.state = target if target is not None else {}
        self._device = device

    @property
    def device(self) -> str:
        """Where jobs run: the one given, else the model's device (``cpu`` for a dict)."""
        if self._device is not None:
            return self._device
        if self.writer is not None:
            first = next(iter(self.writer.state.values()), None)
            if first is not None:
                return str(first.device)
        return "cpu"

    def refresh(self) -> bool:
        """Re-read a model whose parameters were replaced (``model.to(...)``); True then."""
        if self.writer is None or not self.writer.stale():
            return False
        self.writer = ModelWriter(self.writer.model)
        self.state = self.writer.state
        return True

    def check_names(self, jobs: Sequence[TensorJob]) -> None:
        """A model must hold every job's tensor (a dict takes new entries)."""
        if self.writer is None:
            return
        absent = [job.name for job in jobs if job.name not in self.state]
        if absent:
            raise MergeError(
                f"the resident model has no tensor {absent[0]} ({len(absent)} missing); "
                "match with the donor whose layout and naming the model has"
            )

    def out_dtype(self, job: TensorJob, recipe_dtype: torch.dtype | None) -> torch.dtype:
        """The dtype a job's output is made in: the target's, else the recipe's or the job's."""
        dst = self.state.get(job.name)
        return dst.dtype if dst is not None else (recipe_dtype or job.dtype)

    def merge(self, jobs: Sequence[TensorJob], ctx: JobContext) -> None:
        """Run ``jobs`` into the target: straight into its storage where the shapes agree
        and the tensor is not tied (tied ones are written together, so their values are
        checked); each output in :meth:`out_dtype` (``ctx.out_dtype``: the recipe's)."""
        self.check_names(jobs)
        writer = self.writer
        tied: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for job in jobs:
                dst = self.state.get(job.name)
                in_place = dst is not None and tuple(dst.shape) == job.shape
                into = dst if in_place and (writer is None or job.name not in writer.tied) else None
                job_ctx = replace(ctx, out_dtype=self.out_dtype(job, ctx.out_dtype))
                out = run_job(job, job_ctx, out=into)
                if into is not None:
                    continue
                if writer is None:
                    write_into_dict(self.state, job.name, out, copy=job.action == "copy")
                elif job.name in writer.tied:
                    tied[job.name] = out
                else:
                    writer.write({job.name: out})
            if writer is not None and tied:
                writer.write(tied)


def merge_into(
    plan: MergePlan,
    sources: Sequence[TensorSource],
    target: torch.nn.Module | MutableMapping[str, torch.Tensor] | None = None,
    *,
    device: str | None = None,
    check_finite: bool = False,
    options: MergeOptions = DEFAULT_OPTIONS,
) -> MutableMapping[str, torch.Tensor]:
    """Merge in memory into ``target`` (:class:`InMemoryTarget`: a model's parameters
    overwritten in place, or a dict; a new dict when None, the tensors in the recipe's
    dtype, else the donor's); returns the dict of merged tensors (the model's state dict
    for a model)."""
    into = InMemoryTarget(target, device)
    ctx = JobContext.for_plan(
        plan, sources, device=into.device, check_finite=check_finite, options=options
    )
    into.merge(plan.jobs, ctx)
    return into.state

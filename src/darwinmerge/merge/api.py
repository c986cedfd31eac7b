"""High-level merge entry points: a recipe to a Hugging Face model folder, or in memory."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from darwinmerge.checkpoint import (
    CheckpointReader,
    CheckpointWriter,
    copy_side_files,
    write_model_card,
)
from darwinmerge.errors import ConfigError, OutputExistsError
from darwinmerge.merge.buffers import BufferPool
from darwinmerge.merge.executor import DTYPES, alone_first, execute_plan
from darwinmerge.merge.options import DEFAULT_OPTIONS, MergeOptions
from darwinmerge.merge.planner import MergePlan, TensorJob, plan_merge
from darwinmerge.merge.recipe import Recipe
from darwinmerge.merge.stack import stacked_config_updates

__all__ = [
    "MergeResult",
    "PAGE_CACHE_MODES",
    "merge_to_disk",
    "open_sources",
    "page_cache_drop",
    "RECIPE_FILE",
]

RECIPE_FILE = "darwin_recipe.yaml"
#: what a merge does with the page cache of the parents' files it has read
PAGE_CACHE_MODES = ("auto", "keep", "drop")


@dataclass
class MergeResult:
    out_dir: Path
    tensors: int
    bytes_written: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def _mem_available() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def page_cache_drop(mode: str, parent_bytes: int) -> bool:
    """Whether a merge reading ``parent_bytes`` of parent files drops their page cache.

    ``drop``: always; ``keep``: never; ``auto``: when the files add up to more than half
    of the memory available now (they cannot stay cached anyway, and reclaiming them
    under pressure costs more than reading once and forgetting). Only where the OS has
    ``posix_fadvise``.
    """
    if mode not in PAGE_CACHE_MODES:
        raise ConfigError(f"page_cache: {mode!r} is not one of {', '.join(PAGE_CACHE_MODES)}")
    if mode == "keep" or not hasattr(os, "posix_fadvise"):
        return False
    if mode == "drop":
        return True
    available = _mem_available()
    return available is not None and parent_bytes > available // 2


def open_sources(
    recipe: Recipe,
    stack: ExitStack,
    *,
    allow_pickle: bool = False,
    page_cache: str = "keep",
    options: MergeOptions = DEFAULT_OPTIONS,
) -> list[CheckpointReader]:
    """Open the recipe's parents (then its base); ``page_cache`` as in
    :func:`page_cache_drop`, over all of them together (read past the cache when
    ``options.direct_reads``). With ``tokenizer_source`` the readers are seen on the
    child's vocabulary (:mod:`darwinmerge.merge.vocab`)."""
    paths = [p.path for p in recipe.parents] + ([recipe.base] if recipe.base else [])
    # FP8 block-quantized parents are read dequantized to the child's dtype (bf16 default)
    fp8_to = DTYPES[recipe.dtype or "bfloat16"]
    readers = [
        stack.enter_context(
            CheckpointReader(
                p,
                allow_pickle=allow_pickle,
                dequantize_to=fp8_to,
                direct_reads=options.direct_reads,
            )
        )
        for p in paths
    ]
    if page_cache_drop(page_cache, sum(r.file_bytes for r in readers)):
        for r in readers:
            r.drop_cache = True
    if recipe.tokenizer_source is not None:  # embeddings and lm_head on the child's vocabulary
        from darwinmerge.merge.vocab import align_vocabulary

        return align_vocabulary(recipe, readers)[0]  # type: ignore[return-value]
    return readers


def merge_to_disk(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    force: bool = False,
    device: str = "cpu",
    threads: int = 1,
    allow_pickle: bool = False,
    check_finite: bool = True,
    max_shard_bytes: int = 5 * 2**30,
    on_plan: Callable[[MergePlan], None] | None = None,
    progress: Callable[[TensorJob], None] | None = None,
    extra_files: Sequence[tuple[str, str]] = (),
    page_cache: str = "auto",
    options: MergeOptions = DEFAULT_OPTIONS,
) -> MergeResult:
    """Merge the recipe's parents into ``out_dir`` (atomically; refuses to overwrite
    an existing folder unless ``force``). ``page_cache``: ``auto``, ``keep`` or ``drop``
    the parents' file pages once read (:func:`page_cache_drop`). ``options``: how the
    merge runs (kernels, direct reads; :class:`~darwinmerge.merge.options.MergeOptions`)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise OutputExistsError(f"{out_dir} already exists; pass --force to replace it")
    start = time.perf_counter()
    with ExitStack() as stack:
        sources = open_sources(
            recipe, stack, allow_pickle=allow_pickle, page_cache=page_cache, options=options
        )
        plan = plan_merge(recipe, sources)
        # the jobs that run alone first, back to back (the second reuses the first's
        # buffers); the files list tensors in this order, the index maps them anyway
        plan = replace(plan, jobs=alone_first(plan.jobs))
        if on_plan is not None:
            on_plan(plan)
        donor_dir = Path(recipe.parents[plan.donor].path)
        written = 0
        out_dtype = DTYPES[recipe.dtype] if recipe.dtype else None
        with CheckpointWriter(out_dir, force=force, max_shard_bytes=max_shard_bytes) as writer:
            writer_notes = writer.notes  # stale temporary folders of killed runs, removed
            # every output tensor is known: shards are laid out now and written in place
            writer.plan([(job.name, out_dtype or job.dtype, job.shape) for job in plan.jobs])

            def sink(name: str, tensor: object) -> None:
                nonlocal written
                writer.add(name, tensor)  # type: ignore[arg-type]
                written += tensor.numel() * tensor.element_size()  # type: ignore[attr-defined]

            # reads and outputs recycle their buffers: the writer is done with a tensor
            # when add returns, and the layers repeat the same shapes
            pool = BufferPool()
            for source in sources:
                source.pool = pool
            execute_plan(
                plan,
                sources,
                sink,
                threads=threads,
                device=device,
                check_finite=check_finite,
                progress=progress,
                buffers=pool,
                options=options,
            )
            pool.clear()
            updates: dict[str, Any] = {"dtype": recipe.dtype} if recipe.dtype else {}
            if plan.stacked is not None:  # the stacked layers' count and types
                types = plan.stacked.layer_types
                config = sources[plan.donor].config
                updates.update(stacked_config_updates(config, len(types), types))
            alignment = getattr(sources[0], "alignment", None)
            if alignment is not None:  # tokenizer_source: the child's vocabulary size
                size = {"vocab_size": alignment.size}
                nested = "text_config" in sources[plan.donor].config
                updates.update({"text_config": size} if nested else size)
            copy_side_files(donor_dir, writer.tmp_dir, config_updates=updates or None)
            if alignment is not None:
                alignment.save_tokenizer(writer.tmp_dir)
            recipe_yaml = recipe.to_yaml()
            (writer.tmp_dir / RECIPE_FILE).write_text(recipe_yaml)
            for fname, text in extra_files:
                (writer.tmp_dir / fname).write_text(text)
            write_model_card(
                writer.tmp_dir,
                base_models=[p.path for p in recipe.parents],
                recipe_yaml=recipe_yaml,
                title=f"{out_dir.name}: darwinmerge {recipe.method} merge",
                method=recipe.method,
                notes=plan.notes,
            )
    return MergeResult(
        out_dir=out_dir,
        tensors=len(plan.jobs),
        bytes_written=written,
        seconds=time.perf_counter() - start,
        notes=[*writer_notes, *plan.notes],
    )

"""High-level merge entry points: a recipe to a Hugging Face model folder, or in memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from darwinmerge.checkpoint import (
    CheckpointReader,
    CheckpointWriter,
    copy_side_files,
    write_model_card,
)
from darwinmerge.errors import OutputExistsError
from darwinmerge.merge.executor import DTYPES, execute_plan
from darwinmerge.merge.planner import MergePlan, TensorJob, plan_merge
from darwinmerge.merge.recipe import Recipe

__all__ = ["MergeResult", "merge_to_disk", "open_sources", "RECIPE_FILE"]

RECIPE_FILE = "darwin_recipe.yaml"


@dataclass
class MergeResult:
    out_dir: Path
    tensors: int
    bytes_written: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def open_sources(
    recipe: Recipe, stack: ExitStack, *, allow_pickle: bool = False
) -> list[CheckpointReader]:
    paths = [p.path for p in recipe.parents] + ([recipe.base] if recipe.base else [])
    # FP8 block-quantized parents are read dequantized to the child's dtype (bf16 default)
    fp8_to = DTYPES[recipe.dtype or "bfloat16"]
    return [
        stack.enter_context(CheckpointReader(p, allow_pickle=allow_pickle, dequantize_to=fp8_to))
        for p in paths
    ]


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
) -> MergeResult:
    """Merge the recipe's parents into ``out_dir`` (atomically; refuses to overwrite
    an existing folder unless ``force``)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise OutputExistsError(f"{out_dir} already exists; pass --force to replace it")
    start = time.perf_counter()
    with ExitStack() as stack:
        sources = open_sources(recipe, stack, allow_pickle=allow_pickle)
        plan = plan_merge(recipe, sources)
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

            execute_plan(
                plan,
                sources,
                sink,
                threads=threads,
                device=device,
                check_finite=check_finite,
                progress=progress,
            )
            updates = {"dtype": recipe.dtype} if recipe.dtype else None
            copy_side_files(donor_dir, writer.tmp_dir, config_updates=updates)
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

"""Merging: pure tensor ops, the typed Recipe, the planner and the streaming executor."""

from typing import TYPE_CHECKING

from darwinmerge.lazy import lazy_exports

if TYPE_CHECKING:  # the exports, imported on first use (lazy_exports)
    from darwinmerge.merge.api import RECIPE_FILE, MergeResult, merge_to_disk, open_sources
    from darwinmerge.merge.executor import (
        JobContext,
        StateDictSource,
        execute_plan,
        merge_into,
        run_job,
    )
    from darwinmerge.merge.mergekit_io import (
        apply_overrides,
        is_mergekit_config,
        load_any_config,
        recipe_from_mergekit,
        recipe_to_mergekit,
    )
    from darwinmerge.merge.options import KernelContext, MergeOptions
    from darwinmerge.merge.planner import (
        Fetch,
        MatchedTensor,
        Matching,
        MergePlan,
        TensorJob,
        TensorSource,
        assign,
        match_parents,
        plan_merge,
    )
    from darwinmerge.merge.recipe import (
        MERGED,
        ParentSpec,
        Recipe,
        Revive,
        RouterRule,
        Rule,
        Transplant,
        load_recipe,
        resolve_router,
        resolve_schedule,
    )
    from darwinmerge.merge.resident import (
        ApplyStats,
        ModelWriter,
        ResidentMerge,
        job_signature,
        write_into_model,
    )
    from darwinmerge.merge.revive import SCAN_READERS, DeadExperts, read_dead_experts

__getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "MERGED",
    "RECIPE_FILE",
    "SCAN_READERS",
    "ApplyStats",
    "DeadExperts",
    "Fetch",
    "JobContext",
    "KernelContext",
    "MatchedTensor",
    "Matching",
    "MergePlan",
    "MergeOptions",
    "MergeResult",
    "ModelWriter",
    "ParentSpec",
    "Recipe",
    "ResidentMerge",
    "Revive",
    "RouterRule",
    "Rule",
    "StateDictSource",
    "TensorJob",
    "TensorSource",
    "Transplant",
    "apply_overrides",
    "assign",
    "execute_plan",
    "is_mergekit_config",
    "job_signature",
    "load_any_config",
    "load_recipe",
    "match_parents",
    "merge_into",
    "merge_to_disk",
    "open_sources",
    "plan_merge",
    "read_dead_experts",
    "recipe_from_mergekit",
    "recipe_to_mergekit",
    "resolve_router",
    "resolve_schedule",
    "run_job",
    "write_into_model",
]

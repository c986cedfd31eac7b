"""Merging: pure tensor ops, the typed Recipe, the planner and the streaming executor."""

from typing import TYPE_CHECKING

from darwinmerge.lazy import lazy_exports

if TYPE_CHECKING:  # the exports, imported on first use (_EXPORTS below)
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

#: export -> the module that defines it, imported on first use (tests/test_lazy.py
#: checks this table against the imports above and against the modules)
_EXPORTS = {
    "RECIPE_FILE": "darwinmerge.merge.api",
    "MergeResult": "darwinmerge.merge.api",
    "merge_to_disk": "darwinmerge.merge.api",
    "open_sources": "darwinmerge.merge.api",
    "JobContext": "darwinmerge.merge.executor",
    "StateDictSource": "darwinmerge.merge.executor",
    "execute_plan": "darwinmerge.merge.executor",
    "merge_into": "darwinmerge.merge.executor",
    "run_job": "darwinmerge.merge.executor",
    "apply_overrides": "darwinmerge.merge.mergekit_io",
    "is_mergekit_config": "darwinmerge.merge.mergekit_io",
    "load_any_config": "darwinmerge.merge.mergekit_io",
    "recipe_from_mergekit": "darwinmerge.merge.mergekit_io",
    "recipe_to_mergekit": "darwinmerge.merge.mergekit_io",
    "KernelContext": "darwinmerge.merge.options",
    "MergeOptions": "darwinmerge.merge.options",
    "Fetch": "darwinmerge.merge.planner",
    "MatchedTensor": "darwinmerge.merge.planner",
    "Matching": "darwinmerge.merge.planner",
    "MergePlan": "darwinmerge.merge.planner",
    "TensorJob": "darwinmerge.merge.planner",
    "TensorSource": "darwinmerge.merge.planner",
    "assign": "darwinmerge.merge.planner",
    "match_parents": "darwinmerge.merge.planner",
    "plan_merge": "darwinmerge.merge.planner",
    "MERGED": "darwinmerge.merge.recipe",
    "ParentSpec": "darwinmerge.merge.recipe",
    "Recipe": "darwinmerge.merge.recipe",
    "Revive": "darwinmerge.merge.recipe",
    "RouterRule": "darwinmerge.merge.recipe",
    "Rule": "darwinmerge.merge.recipe",
    "Transplant": "darwinmerge.merge.recipe",
    "load_recipe": "darwinmerge.merge.recipe",
    "resolve_router": "darwinmerge.merge.recipe",
    "resolve_schedule": "darwinmerge.merge.recipe",
    "ApplyStats": "darwinmerge.merge.resident",
    "ModelWriter": "darwinmerge.merge.resident",
    "ResidentMerge": "darwinmerge.merge.resident",
    "job_signature": "darwinmerge.merge.resident",
    "write_into_model": "darwinmerge.merge.resident",
    "SCAN_READERS": "darwinmerge.merge.revive",
    "DeadExperts": "darwinmerge.merge.revive",
    "read_dead_experts": "darwinmerge.merge.revive",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

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

"""Merging: pure tensor ops, the typed Recipe, the planner and the streaming executor."""

from darwinmerge.merge.api import RECIPE_FILE, MergeResult, merge_to_disk, open_sources
from darwinmerge.merge.executor import StateDictSource, execute_plan, merge_into, run_job
from darwinmerge.merge.mergekit_io import (
    apply_overrides,
    is_mergekit_config,
    load_any_config,
    recipe_from_mergekit,
    recipe_to_mergekit,
)
from darwinmerge.merge.planner import Fetch, MergePlan, TensorJob, TensorSource, plan_merge
from darwinmerge.merge.recipe import (
    MERGED,
    ParentSpec,
    Recipe,
    RouterRule,
    Rule,
    Transplant,
    load_recipe,
    resolve_router,
    resolve_schedule,
)

__all__ = [
    "MERGED",
    "RECIPE_FILE",
    "Fetch",
    "MergePlan",
    "MergeResult",
    "ParentSpec",
    "Recipe",
    "RouterRule",
    "Rule",
    "StateDictSource",
    "TensorJob",
    "TensorSource",
    "Transplant",
    "apply_overrides",
    "execute_plan",
    "is_mergekit_config",
    "load_any_config",
    "load_recipe",
    "merge_into",
    "merge_to_disk",
    "open_sources",
    "plan_merge",
    "recipe_from_mergekit",
    "recipe_to_mergekit",
    "resolve_router",
    "resolve_schedule",
    "run_job",
]

"""Merge maths: pure tensor functions (import only torch), one registry, one entry point.

The reference maths only: the fast implementations of some ops live in
:mod:`darwinmerge.merge.kernels` and are chosen by the executor.

Every op computes in float32 (float64 for float64 inputs), returns the dtype of its
reference input (``tensors[0]``; the base for task-vector methods) unless ``out_dtype``
is given, and takes ``group_dims``: the number of leading dims that index independent
groups (experts, gate/up halves) whose statistics are computed separately.
"""

from darwinmerge.merge.ops.api import (
    METHODS,
    MergeMethod,
    MethodCall,
    ParamSpec,
    apply_method,
    prepare_call,
)
from darwinmerge.merge.ops.catalog import (
    breadcrumbs,
    breadcrumbs_ties,
    dare_linear,
    dare_ties,
    della,
    della_linear,
    draw_method_masks,
    task_arithmetic,
    ties,
)
from darwinmerge.merge.ops.consensus import model_stock, ram, ramplus_tl, sce
from darwinmerge.merge.ops.groups import as_groups, compute_dtype
from darwinmerge.merge.ops.interpolation import (
    SLERP_DOT_THRESHOLD,
    linear,
    slerp,
    slerp_coefficients,
)
from darwinmerge.merge.ops.selection import rank_window_mask
from darwinmerge.merge.ops.selective import arcee_fusion, nearswap, passthrough
from darwinmerge.merge.ops.sparsify import della_probabilities
from darwinmerge.merge.ops.spherical import karcher, multislerp, nuslerp, nuslerp_t
from darwinmerge.merge.ops.task_vectors import Sparsifier, draw_masks, generalized_task_arithmetic
from darwinmerge.merge.ops.trimmed import trimmed_lerp, trimmed_task_lerp

__all__ = [
    "MergeMethod",
    "MethodCall",
    "METHODS",
    "ParamSpec",
    "SLERP_DOT_THRESHOLD",
    "Sparsifier",
    "apply_method",
    "arcee_fusion",
    "as_groups",
    "breadcrumbs",
    "breadcrumbs_ties",
    "compute_dtype",
    "dare_linear",
    "dare_ties",
    "della",
    "della_linear",
    "della_probabilities",
    "draw_masks",
    "draw_method_masks",
    "generalized_task_arithmetic",
    "karcher",
    "linear",
    "model_stock",
    "multislerp",
    "nearswap",
    "nuslerp",
    "nuslerp_t",
    "passthrough",
    "prepare_call",
    "ram",
    "ramplus_tl",
    "rank_window_mask",
    "sce",
    "slerp",
    "slerp_coefficients",
    "task_arithmetic",
    "ties",
    "trimmed_lerp",
    "trimmed_task_lerp",
]

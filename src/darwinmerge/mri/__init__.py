"""Model MRI: probe-wise layer importance, MoE health, weight-space scan, parent comparison."""

from typing import TYPE_CHECKING

from darwinmerge.lazy import lazy_exports

if TYPE_CHECKING:  # the exports, imported on first use (lazy_exports)
    from darwinmerge.mri.capture import TIE_TOLERANCE, Capture, CaptureRecord, LayerInputs
    from darwinmerge.mri.compare import (
        SWAP_BUDGET_BYTES,
        ComparisonScan,
        SwapResult,
        compare_scans,
        hidden_bytes,
        spearman,
        swap_chunks,
        swap_scan,
        swapped_layer,
    )
    from darwinmerge.mri.config import DEAD_ABS_THRESHOLD, DEAD_THRESHOLD, MriConfig
    from darwinmerge.mri.layout import ResolvedLayout, family_of, family_spec, resolve_layout
    from darwinmerge.mri.metrics import (
        angular_distance_last,
        block_influence,
        bootstrap_dead_fraction,
        dead_fraction,
        expert_similarity,
        load_entropy,
        router_entropy,
        token_share,
        utilisation,
    )
    from darwinmerge.mri.pipeline import (
        MriComparison,
        compare_models,
        load_model,
        scan_model,
    )
    from darwinmerge.mri.probes import (
        CATEGORIES,
        LOSS_TOKENS,
        PROBE_SETS,
        ProbeBatch,
        ProbeBatches,
        ProbeFactory,
        ProbeSet,
        as_encoder,
        builtin_probes,
        load_probe_file,
        resolve_probes,
        tokenize_probes,
    )
    from darwinmerge.mri.scan import (
        Scan,
        ScanOptions,
        expert_weight_matrix,
        loss_per_category,
        run_scan,
        sequence_nll,
    )
    from darwinmerge.mri.weights import WeightScan, weight_scan

__getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "CATEGORIES",
    "Capture",
    "CaptureRecord",
    "ComparisonScan",
    "DEAD_ABS_THRESHOLD",
    "DEAD_THRESHOLD",
    "LOSS_TOKENS",
    "LayerInputs",
    "MriComparison",
    "MriConfig",
    "PROBE_SETS",
    "ProbeBatch",
    "ProbeBatches",
    "ProbeFactory",
    "ProbeSet",
    "ResolvedLayout",
    "SWAP_BUDGET_BYTES",
    "Scan",
    "ScanOptions",
    "SwapResult",
    "TIE_TOLERANCE",
    "WeightScan",
    "angular_distance_last",
    "as_encoder",
    "block_influence",
    "bootstrap_dead_fraction",
    "builtin_probes",
    "compare_models",
    "compare_scans",
    "dead_fraction",
    "expert_similarity",
    "expert_weight_matrix",
    "family_of",
    "family_spec",
    "hidden_bytes",
    "load_entropy",
    "load_model",
    "load_probe_file",
    "loss_per_category",
    "resolve_layout",
    "resolve_probes",
    "router_entropy",
    "run_scan",
    "scan_model",
    "sequence_nll",
    "spearman",
    "swap_chunks",
    "swap_scan",
    "swapped_layer",
    "token_share",
    "tokenize_probes",
    "utilisation",
    "weight_scan",
]

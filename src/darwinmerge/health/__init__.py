"""Health: the child scanned against both parents -> Verdict (flags, summary) and a
prescription (typed recipe changes), with a repair loop that keeps a fix only when the
fitness score does not drop."""

from typing import TYPE_CHECKING

from darwinmerge.lazy import lazy_exports

if TYPE_CHECKING:  # the exports, imported on first use (lazy_exports)
    from darwinmerge.health.apply import (
        LAYER_COMPONENTS,
        apply_changes,
        apply_prescription,
        layer_t,
    )
    from darwinmerge.health.changes import (
        MoveLayerT,
        RecipeChange,
        Revive,
        ScaleDensity,
        SetLayerT,
        SetRouter,
        change_from_dict,
        change_to_dict,
    )
    from darwinmerge.health.check import (
        check_comparable,
        flag_strength,
        health_check,
        layer_flags,
        prescribe,
        prescribe_localized,
    )
    from darwinmerge.health.localize import Localization, LocalizeOptions, localize
    from darwinmerge.health.options import HealthOptions
    from darwinmerge.health.pipeline import HealthRun, order_parents, run_health, saved_parent_scans
    from darwinmerge.health.repair import RepairAttempt, RepairResult, repair
    from darwinmerge.health.summary import summarise_verdict
    from darwinmerge.health.verdict import (
        VERDICT_FILE,
        CategoryLoss,
        LayerFlag,
        RoutingFlag,
        Verdict,
    )

__getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "LAYER_COMPONENTS",
    "VERDICT_FILE",
    "CategoryLoss",
    "HealthOptions",
    "HealthRun",
    "LayerFlag",
    "Localization",
    "LocalizeOptions",
    "MoveLayerT",
    "RecipeChange",
    "RepairAttempt",
    "RepairResult",
    "Revive",
    "RoutingFlag",
    "ScaleDensity",
    "SetLayerT",
    "SetRouter",
    "Verdict",
    "apply_changes",
    "apply_prescription",
    "change_from_dict",
    "change_to_dict",
    "check_comparable",
    "flag_strength",
    "health_check",
    "layer_flags",
    "layer_t",
    "localize",
    "order_parents",
    "prescribe",
    "prescribe_localized",
    "repair",
    "run_health",
    "saved_parent_scans",
    "summarise_verdict",
]

"""Health: the child scanned against both parents -> Verdict (flags, summary) and a
prescription (typed recipe changes), with a repair loop that keeps a fix only when the
fitness score does not drop."""

from typing import TYPE_CHECKING

from darwinmerge.lazy import lazy_exports

if TYPE_CHECKING:  # the exports, imported on first use (_EXPORTS below)
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

#: export -> the module that defines it, imported on first use (tests/test_lazy.py
#: checks this table against the imports above and against the modules)
_EXPORTS = {
    "LAYER_COMPONENTS": "darwinmerge.health.apply",
    "apply_changes": "darwinmerge.health.apply",
    "apply_prescription": "darwinmerge.health.apply",
    "layer_t": "darwinmerge.health.apply",
    "MoveLayerT": "darwinmerge.health.changes",
    "RecipeChange": "darwinmerge.health.changes",
    "Revive": "darwinmerge.health.changes",
    "ScaleDensity": "darwinmerge.health.changes",
    "SetLayerT": "darwinmerge.health.changes",
    "SetRouter": "darwinmerge.health.changes",
    "change_from_dict": "darwinmerge.health.changes",
    "change_to_dict": "darwinmerge.health.changes",
    "check_comparable": "darwinmerge.health.check",
    "flag_strength": "darwinmerge.health.check",
    "health_check": "darwinmerge.health.check",
    "layer_flags": "darwinmerge.health.check",
    "prescribe": "darwinmerge.health.check",
    "prescribe_localized": "darwinmerge.health.check",
    "Localization": "darwinmerge.health.localize",
    "LocalizeOptions": "darwinmerge.health.localize",
    "localize": "darwinmerge.health.localize",
    "HealthOptions": "darwinmerge.health.options",
    "HealthRun": "darwinmerge.health.pipeline",
    "order_parents": "darwinmerge.health.pipeline",
    "run_health": "darwinmerge.health.pipeline",
    "saved_parent_scans": "darwinmerge.health.pipeline",
    "RepairAttempt": "darwinmerge.health.repair",
    "RepairResult": "darwinmerge.health.repair",
    "repair": "darwinmerge.health.repair",
    "summarise_verdict": "darwinmerge.health.summary",
    "VERDICT_FILE": "darwinmerge.health.verdict",
    "CategoryLoss": "darwinmerge.health.verdict",
    "LayerFlag": "darwinmerge.health.verdict",
    "RoutingFlag": "darwinmerge.health.verdict",
    "Verdict": "darwinmerge.health.verdict",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

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

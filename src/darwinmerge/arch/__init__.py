"""Architecture knowledge: tensor name -> role, per family, per expert layout and prefix.

See docs/architectures.md.
"""

from darwinmerge.arch.architecture import Architecture, text_config
from darwinmerge.arch.detect import check_compatible, detect_architecture
from darwinmerge.arch.roles import COMPONENTS, PROJECTIONS, Piece, TensorRole
from darwinmerge.arch.summary import (
    ArchitectureSummary,
    ComponentRow,
    LayerRow,
    TensorRow,
    summarize,
)
from darwinmerge.arch.tables import (
    FAMILY_SPECS,
    MODEL_TYPE_TO_FAMILY,
    SPARSE_RULES,
    SUPPORTED_FAMILIES,
    FamilySpec,
    ModulePaths,
    Rule,
    Scope,
    config_value,
    expert_count,
    experts_per_token,
    is_sparse_layer,
)

__all__ = [
    "COMPONENTS",
    "PROJECTIONS",
    "Architecture",
    "ArchitectureSummary",
    "ComponentRow",
    "FAMILY_SPECS",
    "FamilySpec",
    "LayerRow",
    "MODEL_TYPE_TO_FAMILY",
    "ModulePaths",
    "Piece",
    "Rule",
    "SPARSE_RULES",
    "SUPPORTED_FAMILIES",
    "Scope",
    "TensorRole",
    "TensorRow",
    "check_compatible",
    "config_value",
    "detect_architecture",
    "expert_count",
    "is_sparse_layer",
    "summarize",
    "text_config",
    "experts_per_token",
]

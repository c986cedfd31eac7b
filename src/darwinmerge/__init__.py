"""darwinmerge: breed a better language model out of two parent checkpoints."""

from darwinmerge.errors import (
    ArchitectureMismatchError,
    CheckpointError,
    ConfigError,
    DarwinError,
    EvaluationError,
    MergeError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "DarwinError",
    "ConfigError",
    "CheckpointError",
    "ArchitectureMismatchError",
    "MergeError",
    "EvaluationError",
]

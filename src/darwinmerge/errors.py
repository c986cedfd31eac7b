"""One exception hierarchy for the whole library.

Every message says what failed, where (file / tensor / field) and what to do.
The CLI turns a :class:`DarwinError` into a one-line message and exit code 1.
"""

from __future__ import annotations

__all__ = [
    "DarwinError",
    "ConfigError",
    "UnknownNameError",
    "CheckpointError",
    "OutputExistsError",
    "DiskFullError",
    "MissingTokenizerError",
    "ArchitectureMismatchError",
    "MergeError",
    "EvaluationError",
    "MissingDependencyError",
]


class DarwinError(Exception):
    """Root of every error this library raises on purpose."""


class ConfigError(DarwinError):
    """A recipe, task or command-line value is invalid."""


class UnknownNameError(ConfigError):
    """A name looked up in a registry does not exist."""


class CheckpointError(DarwinError):
    """A checkpoint cannot be read or written (missing shard, truncated file, ...)."""


class OutputExistsError(CheckpointError):
    """The output path exists and ``force`` was not given."""


class DiskFullError(CheckpointError):
    """The output's file system has (or ran out of) less free space than the child needs."""


class MissingTokenizerError(ConfigError):
    """A model folder has no tokenizer files, or its tokenizer encodes text to no tokens."""


class ArchitectureMismatchError(DarwinError):
    """Parents do not share the architecture a merge needs (shapes, vocab, layers)."""


class MergeError(DarwinError):
    """A merge could not be carried out (NaN in a parent, unknown tensor, ...)."""


class EvaluationError(DarwinError):
    """A task, scorer or backend failed."""


class MissingDependencyError(DarwinError):
    """An optional dependency is not installed; the message carries the install hint."""

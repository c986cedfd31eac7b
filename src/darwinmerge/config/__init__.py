"""Configs: one YAML loader with ``key=value`` overrides, one error format, and the table
of the typed config sections (:mod:`darwinmerge.config.sections`).

Light on purpose (yaml, pydantic, difflib): every stage imports it, it imports no stage.
"""

from darwinmerge.config.errors import (
    close_match_hint,
    config_error,
    flag_error,
    format_validation_error,
    known_keys_at,
)
from darwinmerge.config.loader import (
    FileConfig,
    apply_overrides,
    load_config,
    read_yaml_config,
    validate_config,
)
from darwinmerge.config.sections import SECTIONS, section_model

__all__ = [
    "SECTIONS",
    "FileConfig",
    "apply_overrides",
    "close_match_hint",
    "config_error",
    "flag_error",
    "format_validation_error",
    "known_keys_at",
    "load_config",
    "read_yaml_config",
    "section_model",
    "validate_config",
]

"""Flags that are config fields: a flag ``--key-name`` is the field ``key_name`` of a
config section (``MriConfig``, ``HealthOptions`` ...), takes its default from the model
(:func:`default`, never typed twice) and is validated by the model with the error naming
the flag (:func:`from_flags`). ``tests/test_config_names.py`` walks every command's
options against the sections and fails on a mismatch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from darwinmerge.config.errors import flag_error

__all__ = ["default", "from_flags"]

M = TypeVar("M", bound=BaseModel)


def default(model: type[BaseModel], field: str) -> Any:
    """The default of ``model.field`` (the value a flag of that field defaults to)."""
    return model.model_fields[field].get_default(call_default_factory=True)


def from_flags(model: type[M], values: Mapping[str, Any], prefix: str = "", **extra: Any) -> M:
    """``model`` from the flag values ``values`` (a command's parameters: the field
    ``f`` is the parameter ``PREFIXf``; other names are ignored) and ``extra`` fields;
    a bad value is one line naming its flag."""
    data = {name: values[prefix + name] for name in model.model_fields if prefix + name in values}
    try:
        return model.model_validate({**data, **extra})
    except ValidationError as exc:
        raise flag_error(exc, model, prefix.replace("_", "-")) from exc

"""Flags that are config fields: a flag ``--key-name`` is the field ``key_name`` of a
config section (``MriConfig``, ``HealthOptions`` ...) and is validated by the model with
the error naming the flag (:func:`from_flags`).

A flag's default is written in the command's signature, so that ``darwin --help`` builds
no pydantic model (it imports no pydantic); ``tests/test_config_names.py`` walks every
command's options against the sections and fails on a flag whose name or default is not
its field's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["from_flags"]

M = TypeVar("M", bound="BaseModel")


def from_flags(model: type[M], values: Mapping[str, Any], prefix: str = "", **extra: Any) -> M:
    """``model`` from the flag values ``values`` (a command's parameters: the field
    ``f`` is the parameter ``PREFIXf``; other names are ignored) and ``extra`` fields;
    a bad value is one line naming its flag."""
    from pydantic import ValidationError

    from darwinmerge.config.errors import flag_error

    data = {name: values[prefix + name] for name in model.model_fields if prefix + name in values}
    try:
        return model.model_validate({**data, **extra})
    except ValidationError as exc:
        raise flag_error(exc, model, prefix.replace("_", "-")) from exc

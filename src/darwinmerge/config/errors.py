"""One format for every config problem: ``FILE: key.path: what is wrong (did you mean
'x'?)``, all problems of one file on one line, ``; `` between them.

The same format names command-line flags (``--key-path``) where the values came from
flags (:func:`flag_error`). An unknown key is answered with the closest known key of its
section (:mod:`difflib`, as :class:`~darwinmerge.registry.Registry` answers an unknown
name) or, with none close, with the known keys.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from darwinmerge.errors import ConfigError

__all__ = [
    "close_match_hint",
    "config_error",
    "flag_error",
    "format_validation_error",
    "known_keys_at",
]

_MAX_LISTED = 16


def close_match_hint(name: str, known: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known``, else `` (known: a, b)``
    (nothing when ``known`` is empty or long)."""
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if 0 < len(known) <= _MAX_LISTED:
        return f" (known: {', '.join(sorted(known))})"
    return ""


def _models_in(annotation: Any) -> list[Any]:
    """The pydantic models an annotation holds directly (``X``, ``X | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    return []


def _step(annotation: Any, part: str | int) -> Any | None:
    """The annotation reached from ``annotation`` by one location step (a field of a
    model, a key of a dict, an index of a list or tuple)."""
    models = _models_in(annotation)
    for model in models:
        field = model.model_fields.get(str(part))
        if field is not None:
            return field.annotation
    for model in models:  # a tagged union names its member by the tag (``seed.max_blocks``)
        for field in model.model_fields.values():
            if typing.get_origin(field.annotation) is typing.Literal and typing.get_args(
                field.annotation
            ) == (part,):
                return model
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            found = _step(arg, part)
            if found is not None:
                return found
        return None
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    if origin in (list, Sequence) and args:
        return args[0]
    if origin is tuple and args:
        return args[0]
    return None


def known_keys_at(model: Any, loc: Sequence[str | int]) -> list[str]:
    """The keys a mapping at location ``loc`` of ``model`` (a model class, or a type such
    as a tagged union of models) may hold (empty when ``loc`` does not lead to a model)."""
    annotation: Any = model
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    return sorted({k for m in _models_in(annotation) for k in m.model_fields})


def _clean_loc(loc: Sequence[str | int]) -> list[str | int]:
    # pydantic names a failing validator function in the location of its error
    return [p for p in loc if not str(p).startswith("function-")]


def _problems(exc: ValidationError, model: Any, name: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = _clean_loc(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and model is not None and loc:
            msg += close_match_hint(str(loc[-1]), known_keys_at(model, loc[:-1]))
        out.append((name(loc) if loc else "", msg))
    return out


def _join(problems: list[tuple[str, str]]) -> str:
    parts = [f"{where}: {msg}" if where else msg for where, msg in problems]
    # pydantic reports each union member's failure; keep the distinct messages
    return "; ".join(dict.fromkeys(parts))


def format_validation_error(exc: ValidationError, model: Any = None) -> str:
    """Every problem as ``key.path: message``, one line; with ``model`` (the model, or the
    type of a ``TypeAdapter``, that was validated), an unknown key gets its did-you-mean."""
    return _join(_problems(exc, model, lambda loc: ".".join(str(p) for p in loc)))


def config_error(
    source: str | Path, exc: ValidationError, model: type[BaseModel] | None = None
) -> ConfigError:
    """``SOURCE: key.path: message ...`` (``source``: the file, or ``<recipe>`` etc.)."""
    return ConfigError(f"{source}: {format_validation_error(exc, model)}")


def flag_error(
    exc: ValidationError,
    model: type[BaseModel] | None = None,
    prefix: str = "",
) -> ConfigError:
    """Problems in values that came from command-line flags, each named by its flag:
    field ``key_path`` of ``model`` is ``--PREFIXkey-path`` (``prefix`` for a section
    whose flags carry one, e.g. ``localize-``)."""

    def flag(loc: Sequence[str | int]) -> str:
        return "--" + prefix + "-".join(str(p) for p in loc).replace("_", "-")

    return ConfigError(f"invalid options: {_join(_problems(exc, model, flag))}")

"""One YAML loader for every config kind (recipes, mergekit YAMLs, evolve and run
configs): read the file, apply ``key.sub=value`` overrides, validate into a typed model
once, resolve relative paths against the file's folder.

Override syntax: ``KEY=VALUE`` where ``KEY`` is a dotted path into the YAML (a list item
by its index: ``slices.0.parameters.t=0.3``) and ``VALUE`` is parsed as YAML
(``trials=20``, ``fitness.categories=[math,code]``, ``base=null``). A key that does not
exist is created, and the model's validation then names it with its did-you-mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import yaml
from pydantic import BaseModel, ValidationError

from darwinmerge.config.errors import config_error
from darwinmerge.errors import ConfigError

__all__ = ["FileConfig", "apply_overrides", "load_config", "read_yaml_config", "validate_config"]

M = TypeVar("M", bound=BaseModel)


@runtime_checkable
class FileConfig(Protocol):
    """A config whose paths are relative to its file and that can check its paths."""

    def resolved(self, root: Path) -> Any: ...

    def check_paths(self) -> None: ...


def apply_overrides(
    data: dict[str, Any], overrides: Sequence[str], *, source: str
) -> dict[str, Any]:
    """``key.sub=value`` overrides (value parsed as YAML) applied to a parsed config."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"override {item!r}: expected key=value (e.g. seed=3 or parameters.t=0.4)"
            )
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        node: Any = data
        parts = key.split(".")
        for part in parts[:-1]:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise ConfigError(
                    f"override {item!r}: {source} has no field {part!r} to descend into"
                )
        last = parts[-1]
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override {item!r}: cannot set {last!r} in {source}")
    return data


def read_yaml_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The mapping of a YAML config file with ``key.sub=value`` overrides applied."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return apply_overrides(data, overrides, source=str(path))


def validate_config(model: type[M], data: Any, *, source: str | Path) -> M:
    """``model`` validated from ``data``; every problem in one :class:`ConfigError` line
    that names ``source``, each key path and, for an unknown key, its did-you-mean."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error(source, exc, model) from None


def load_config(
    path: str | Path,
    model: type[M],
    overrides: Sequence[str] = (),
    *,
    check_paths: bool = True,
) -> M:
    """Read, override, validate (:func:`validate_config`) and, for a :class:`FileConfig`,
    resolve its paths against the file's folder and check them (``check_paths``)."""
    path = Path(path)
    config = validate_config(model, read_yaml_config(path, overrides), source=path)
    if isinstance(config, FileConfig):
        config = config.resolved(path.parent)
        if check_paths:
            config.check_paths()
    return config

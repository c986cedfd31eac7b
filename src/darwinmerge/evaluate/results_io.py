"""The ``results.json`` layout of ``darwin eval`` and an atomic JSON writer.

Layout::

    {"meta": {...},
     "models": {NAME: {CATEGORY | "overall": {"score", "ci_low", "ci_high", "n"}}},
     "paired": [{"a", "b", "alpha", "rows": {CATEGORY | "overall": {...}}}],
     "items": {NAME: [{"id", "category", "prediction", "extracted", "correct", ...}]}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from darwinmerge.atomic import write_json_atomic as _write_json
from darwinmerge.errors import EvaluationError, OutputExistsError
from darwinmerge.evaluate.compare import Comparison
from darwinmerge.evaluate.results import EvalResult

__all__ = ["results_payload", "write_json_atomic"]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def results_payload(
    results: Mapping[str, EvalResult],
    comparisons: Sequence[Comparison] = (),
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-ready dictionary for ``results`` (model name -> result)."""
    payload = {
        "meta": dict(meta or {}),
        "models": {name: r.to_dict() for name, r in results.items()},
        "paired": [c.to_dict() for c in comparisons],
        "items": {name: [it.to_dict() for it in r.items] for name, r in results.items()},
    }
    cleaned: dict[str, Any] = _clean(payload)
    return cleaned


def write_json_atomic(path: str | Path, data: Any, *, force: bool = False) -> Path:
    """Write ``data`` as JSON to a temporary file next to ``path``, then rename it
    over ``path``; an existing ``path`` is refused unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: already exists; pass --force to overwrite")
    if not path.parent.is_dir():
        raise EvaluationError(f"{path.parent}: output folder does not exist")
    _write_json(path, data)
    return path

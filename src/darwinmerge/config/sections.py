"""The typed config sections, one table: the name a user meets (a YAML file kind or a
section of a run config) -> the pydantic model that validates it.

Each model stays in the stage package that uses it (``mri/config.py``,
``evolve/config.py`` ...): this package imports no stage, so loading a config imports
no torch, and every stage may use the loader. The table names the models by import path
and loads one on first use.
"""

from __future__ import annotations

import importlib
from typing import cast

from pydantic import BaseModel

from darwinmerge.config.errors import close_match_hint
from darwinmerge.errors import UnknownNameError

__all__ = ["SECTIONS", "section_model"]

#: section name -> "module:Model"
SECTIONS: dict[str, str] = {
    "recipe": "darwinmerge.merge.recipe:Recipe",
    "mri": "darwinmerge.mri.config:MriConfig",
    "evolve": "darwinmerge.evolve.config:EvolveConfig",
    "run.evolve": "darwinmerge.evolve.config:EvolveSection",
    "backend": "darwinmerge.evolve.config:BackendConfig",
    "health": "darwinmerge.health.options:HealthOptions",
    "health.localize": "darwinmerge.health.options:LocalizeOptions",
    "run": "darwinmerge.run.config:RunConfig",
    "run.health": "darwinmerge.run.config:HealthSection",
    "run.final": "darwinmerge.run.config:FinalConfig",
}


def section_model(name: str) -> type[BaseModel]:
    """The model of section ``name`` (an unknown name: one line with its did-you-mean)."""
    if name not in SECTIONS:
        raise UnknownNameError(
            f"unknown config section {name!r}{close_match_hint(name, list(SECTIONS))}"
        )
    module, _, attr = SECTIONS[name].partition(":")
    return cast(type[BaseModel], getattr(importlib.import_module(module), attr))

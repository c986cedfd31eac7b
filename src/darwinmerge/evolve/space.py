"""Genome spaces chosen in the config: :data:`SpaceConfig` and :func:`build_space`.

``SpaceConfig`` is a pydantic discriminated union on ``kind`` (``seed`` |
``layerwise`` | ``mergekit_evolve``); each kind's factory is registered in
:data:`~darwinmerge.evolve.genes.SPACES` by its module.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, TypeAdapter

from darwinmerge.evolve.genes import SPACES, GenomeSpace, SpaceContext
from darwinmerge.evolve.space_layerwise import LayerwiseSpaceConfig
from darwinmerge.evolve.space_mergekit import MergekitEvolveSpaceConfig
from darwinmerge.evolve.space_seed import SeedSpaceConfig

__all__ = ["SPACE_ADAPTER", "SpaceConfig", "SpaceContext", "build_space", "parse_space_config"]

SpaceConfig = Annotated[
    SeedSpaceConfig | LayerwiseSpaceConfig | MergekitEvolveSpaceConfig,
    Field(discriminator="kind"),
]

SPACE_ADAPTER: TypeAdapter[SpaceConfig] = TypeAdapter(SpaceConfig)


def parse_space_config(data: object) -> SpaceConfig:
    """Validate a ``space:`` mapping (raises pydantic's ValidationError)."""
    return SPACE_ADAPTER.validate_python(data)


def build_space(config: SpaceConfig, ctx: SpaceContext) -> GenomeSpace:
    """The genome space ``config`` describes, on the parents of ``ctx``."""
    return SPACES.get(config.kind)(config, ctx)

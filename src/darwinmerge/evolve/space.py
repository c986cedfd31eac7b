"""Genome spaces chosen in the config: :data:`SpaceConfig` and :func:`build_space`.

``SpaceConfig`` is a pydantic discriminated union on ``kind`` of the config models of
every kind registered in :data:`~darwinmerge.evolve.genes.SPACES` (``layerwise`` |
``mergekit_evolve`` | ``seed``). A kind registers its config model, its factory and its
MRI prior rule in one place, its module's :func:`~darwinmerge.evolve.genes.genome_space`
decorator; :data:`SPACES` names the modules (the static table a test checks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field, TypeAdapter

from darwinmerge.evolve.genes import SPACES, GenomeSpace, SpaceContext

__all__ = ["SPACE_ADAPTER", "SpaceConfig", "SpaceContext", "build_space", "parse_space_config"]

if TYPE_CHECKING:
    SpaceConfig = Any
else:
    SpaceConfig = Annotated[
        Union[tuple(SPACES.get(kind).config for kind in SPACES.names())],  # noqa: UP007
        Field(discriminator="kind"),
    ]

SPACE_ADAPTER: TypeAdapter[SpaceConfig] = TypeAdapter(SpaceConfig)


def parse_space_config(data: object) -> SpaceConfig:
    """Validate a ``space:`` mapping (raises pydantic's ValidationError)."""
    return SPACE_ADAPTER.validate_python(data)


def build_space(config: SpaceConfig, ctx: SpaceContext) -> GenomeSpace:
    """The genome space ``config`` describes, on the parents of ``ctx``."""
    return SPACES.get(config.kind).build(config, ctx)

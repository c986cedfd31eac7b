"""``check_evolve_config``: what ``darwin validate`` says about an evolve config.

Kept apart from :mod:`darwinmerge.evolve.api` so that checking a config without building
its space (``build=False``, ``darwin validate --no-check-parents``) imports neither
numpy, Optuna nor torch; building the space and the item split loads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from darwinmerge.evolve.config import EvolveConfig

__all__ = ["check_evolve_config"]


def check_evolve_config(config: EvolveConfig, *, build: bool = True) -> list[str]:
    """Build the space, the prior and the item split of ``config`` (no model is loaded):
    what ``darwin validate`` prints for an evolve config. ``build=False`` only says the
    config parsed (the parents are not opened)."""
    if not build:
        return [f"ok: evolve config ({config.optimizer.name}, {config.trials} trials)"]
    from darwinmerge.evolve.api import _build_space_and_prior, _items

    space, box = _build_space_and_prior(config)
    box = box.narrowed(dict(config.bounds))
    _every, fitness, subset, categories = _items(config)
    lines = [
        f"ok: evolve config, space {getattr(space, 'name', '?')} with {len(box.names)} genes, "
        f"prior {config.prior.kind}, optimizer {config.optimizer.name}, {config.trials} trials",
        f"fitness: {len(subset)} of {len(fitness)} fitness-split items per candidate, "
        f"categories {', '.join(categories)}",
    ]
    for i, name in enumerate(box.names):
        lines.append(
            f"  {name}: mean {box.mean[i]:.3f} sigma {box.sigma[i]:.3f} "
            f"box [{box.lower[i]:.3f}, {box.upper[i]:.3f}]"
        )
    return lines

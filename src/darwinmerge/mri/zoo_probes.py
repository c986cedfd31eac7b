"""Probe texts drawn from the zoo's seeded skill generators (full documents: prompt,
worked trace and answer line), one category per zoo skill, plus the generic texts."""

from __future__ import annotations

import json
import random
from pathlib import Path

from darwinmerge.errors import ConfigError, MissingDependencyError
from darwinmerge.mri.probes import ProbeSet, builtin_probes

__all__ = ["zoo_probe_set", "zoo_probe_set_for"]


def zoo_probe_set(
    world_seed: int = 0, per_category: int = 16, *, n_facts: int = 300, generic: bool = True
) -> ProbeSet:
    """``per_category`` distinct documents of each zoo skill in the world of ``world_seed``
    with ``n_facts`` facts (categories in upper case: REASONING, CODE, LOGIC, MULTILINGUAL,
    KNOWLEDGE). The defaults are those of ``darwin zoo build``."""
    try:
        from darwinmerge.zoo import skills
    except ImportError as exc:  # pragma: no cover - the zoo ships with the package
        raise MissingDependencyError(
            "the zoo skills module is missing; reinstall darwinmerge"
        ) from exc
    world = skills.make_world(world_seed, n_facts=n_facts)
    texts: dict[str, tuple[str, ...]] = {}
    for cat in skills.CATEGORIES:
        rng = random.Random(f"mri-probes-{world_seed}-{cat}")
        docs: list[str] = []
        tries = 0
        while len(docs) < per_category and tries < 100 * per_category:
            tries += 1
            text = skills.GENERATORS[cat](rng, world).text
            if text not in docs:
                docs.append(text)
        texts[cat.upper()] = tuple(docs)
    if generic:
        texts["GENERIC"] = builtin_probes().texts["GENERIC"]
    return ProbeSet(texts)


def zoo_probe_set_for(zoo_dir: str | Path, per_category: int = 16) -> ProbeSet:
    """The zoo probe set of the world a built zoo (``zoo_dir/zoo.json``) was trained in."""
    manifest = Path(zoo_dir) / "zoo.json"
    try:
        cfg = json.loads(manifest.read_text(encoding="utf-8"))["config"]
        seed, n_facts = int(cfg["seed"]), int(cfg["n_facts"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{manifest}: not a readable zoo manifest; build it with `darwin zoo build`"
        ) from exc
    return zoo_probe_set(seed, per_category, n_facts=n_facts)

"""The ``zoo`` probe set for :mod:`darwinmerge.mri` (a plug-in of
:data:`~darwinmerge.mri.probes.PROBE_SETS`, imported when ``zoo`` is first asked for;
the MRI never imports the zoo).

Probe documents are drawn from the zoo's seeded skill generators: the prompt, then the
worked trace and the ``ANSWER:`` line as completion, one category per zoo skill, plus
the generic texts. Specs: ``zoo`` (the world of ``darwin zoo build`` defaults),
``zoo@SEED`` / ``zoo:SEED`` (another world seed), ``zoo@ZOO_DIR`` / ``zoo:ZOO_DIR`` (the
world a built zoo was trained in, read from ``ZOO_DIR/zoo.json``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from darwinmerge.errors import ConfigError
from darwinmerge.mri.probes import PROBE_SETS, ProbeSet, builtin_probes
from darwinmerge.zoo import skills

__all__ = ["zoo_probe_set", "zoo_probe_set_for", "zoo_probe_source"]


#: Probes never repeat an evaluation item that is in the test split of any run whose
#: ``test_fraction`` is at most this (splits are nested: a smaller fraction's test items
#: are a subset), so the MRI, and the prior built on it, never see test items.
PROBE_SAFE_TEST_FRACTION = 0.9


def _test_prompts(world: skills.SkillWorld, eval_items: int, n_facts: int) -> set[str]:
    from darwinmerge.evaluate.tasks import split_of

    out: set[str] = set()
    for cat in skills.CATEGORIES:
        n = min(eval_items, n_facts) if cat == "knowledge" else eval_items
        for it in skills.eval_items(world, cat, n):
            if split_of(it["id"], test_fraction=PROBE_SAFE_TEST_FRACTION) == "test":
                out.add(it["prompt"])
    return out


def zoo_probe_set(
    world_seed: int = 0,
    per_category: int = 16,
    *,
    n_facts: int = 300,
    eval_items: int = 300,
    generic: bool = True,
) -> ProbeSet:
    """``per_category`` distinct documents of each zoo skill in the world of ``world_seed``
    with ``n_facts`` facts (categories in upper case: REASONING, CODE, LOGIC, MULTILINGUAL,
    KNOWLEDGE), each split into prompt and completion, none of them a test-split item of
    the zoo's tasks (``eval_items`` per category; :data:`PROBE_SAFE_TEST_FRACTION`). The
    defaults are those of ``darwin zoo build``."""
    world = skills.make_world(world_seed, n_facts=n_facts)
    held_out = _test_prompts(world, eval_items, n_facts)
    texts: dict[str, tuple[str, ...]] = {}
    prompts: dict[str, tuple[int, ...]] = {}
    for cat in skills.CATEGORIES:
        rng = random.Random(f"mri-probes-{world_seed}-{cat}")
        docs: list[str] = []
        chars: list[int] = []
        tries = 0
        while len(docs) < per_category and tries < 100 * per_category:
            tries += 1
            doc = skills.GENERATORS[cat](rng, world)
            if doc.prompt in held_out:
                continue
            if doc.text not in docs:
                docs.append(doc.text)
                chars.append(len(doc.prompt))
        texts[cat.upper()] = tuple(docs)
        prompts[cat.upper()] = tuple(chars)
    if generic:
        texts["GENERIC"] = builtin_probes().texts["GENERIC"]
        prompts["GENERIC"] = (0,) * len(texts["GENERIC"])
    return ProbeSet(texts, prompts)


def zoo_probe_set_for(zoo_dir: str | Path, per_category: int = 16) -> ProbeSet:
    """The zoo probe set of the world a built zoo (``zoo_dir/zoo.json``) was trained in."""
    manifest = Path(zoo_dir) / "zoo.json"
    try:
        cfg = json.loads(manifest.read_text(encoding="utf-8"))["config"]
        seed, n_facts = int(cfg["seed"]), int(cfg["n_facts"])
        n_items = int(cfg["eval_items"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{manifest}: not a readable zoo manifest; build it with `darwin zoo build`"
        ) from exc
    return zoo_probe_set(seed, per_category, n_facts=n_facts, eval_items=n_items)


@PROBE_SETS.register("zoo")
def zoo_probe_source(arg: str) -> ProbeSet:
    """``""``: the default world; an integer: that world seed; else a built zoo folder."""
    if not arg:
        return zoo_probe_set()
    if arg.lstrip("-").isdigit() and not Path(arg).exists():
        return zoo_probe_set(int(arg))
    return zoo_probe_set_for(arg)

"""The ``zoo`` task source for :mod:`darwinmerge.evaluate` (a plug-in of
:data:`~darwinmerge.evaluate.tasks.TASK_SOURCES`, imported when ``zoo`` is first asked
for).

Specs: ``zoo`` (the default zoo's items, generated in memory, seed 0), ``zoo:SEED`` (the
items of another seed), ``zoo:PATH`` (the ``tasks/`` files of a built zoo folder, or a
``tasks`` folder itself). The items are the same ones ``darwin zoo build`` writes.

Every item carries its gold ``target`` (trace + answer line). A zoo folder built before
that field existed has no ``target`` in its files: the targets are then regenerated
from the seeded world named in the folder's ``zoo.json`` (each matched by id and
checked by prompt and answer); when that is not possible the items keep no target and
the continuous scorers fall back to the bare answer (:attr:`TaskItem.gold`).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

from darwinmerge.errors import ConfigError
from darwinmerge.evaluate.tasks import TASK_SOURCES, TaskItem, check_unique_ids, load_jsonl
from darwinmerge.zoo.build import ZooConfig
from darwinmerge.zoo.skills import CATEGORIES, eval_items, make_world

__all__ = ["zoo_items", "zoo_task_source", "fill_targets"]


def zoo_items(config: ZooConfig | None = None) -> list[TaskItem]:
    """All evaluation items of a zoo config, categories in the fixed order."""
    cfg = config or ZooConfig()
    world = make_world(cfg.seed, n_facts=cfg.n_facts)
    out: list[TaskItem] = []
    for c in CATEGORIES:
        n = min(cfg.eval_items, cfg.n_facts) if c == "knowledge" else cfg.eval_items
        out += [
            TaskItem(
                id=d["id"],
                category=d["category"],
                prompt=d["prompt"],
                answer=d["answer"],
                target=d["target"],
            )
            for d in eval_items(world, c, n)
        ]
    return out


@TASK_SOURCES.register("zoo")
def zoo_task_source(arg: str) -> list[TaskItem]:
    if not arg:
        return zoo_items()
    if arg.lstrip("-").isdigit() and not Path(arg).exists():
        return zoo_items(ZooConfig(seed=int(arg)))
    path = Path(arg)
    folder = path / "tasks" if (path / "tasks").is_dir() else path
    files = [folder / f"{c}.jsonl" for c in CATEGORIES]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise ConfigError(
            f"zoo:{arg}: not a zoo folder (missing {missing[0]}); build one with `darwin zoo build`"
        )
    items = [it for f in files for it in load_jsonl(f)]
    check_unique_ids(items, str(folder))
    if any(it.target is None for it in items):
        items = fill_targets(items, folder.parent / "zoo.json")
    return items


def fill_targets(items: list[TaskItem], manifest: Path) -> list[TaskItem]:
    """Items without ``target`` get the one their zoo's seeded world gives (matched by
    id, checked by prompt and answer). Without a readable manifest, or for an item the
    world does not reproduce, the item is kept as is and one warning says so."""
    try:
        cfg = ZooConfig.model_validate(json.loads(manifest.read_text(encoding="utf-8"))["config"])
    except (OSError, ValueError, KeyError, TypeError):
        warnings.warn(
            f"{manifest}: unreadable zoo manifest, so the tasks' gold targets cannot be "
            f"regenerated; continuous scorers will score the bare answer",
            stacklevel=2,
        )
        return items
    world = {it.id: it for it in zoo_items(cfg)}
    out: list[TaskItem] = []
    missed = 0
    for it in items:
        ref = world.get(it.id)
        if it.target is None and ref and (ref.prompt, ref.answer) == (it.prompt, it.answer):
            it = dataclasses.replace(it, target=ref.target)
        missed += it.target is None
        out.append(it)
    if missed:
        warnings.warn(
            f"{manifest}: {missed} task item(s) differ from the zoo's seeded world and keep "
            f"no gold target; continuous scorers score their bare answer",
            stacklevel=2,
        )
    return out

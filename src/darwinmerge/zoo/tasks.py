"""The ``zoo`` task source for :mod:`darwinmerge.evaluate` (registered on import, through
:func:`darwinmerge.plugins.load_plugins`).

Specs: ``zoo`` (the default zoo's items, generated in memory, seed 0), ``zoo:SEED`` (the
items of another seed), ``zoo:PATH`` (the ``tasks/`` files of a built zoo folder, or a
``tasks`` folder itself). The items are the same ones ``darwin zoo build`` writes.
"""

from __future__ import annotations

from pathlib import Path

from darwinmerge.errors import ConfigError
from darwinmerge.evaluate.tasks import TASK_SOURCES, TaskItem, check_unique_ids, load_jsonl
from darwinmerge.zoo.build import ZooConfig
from darwinmerge.zoo.skills import CATEGORIES, eval_items, make_world

__all__ = ["zoo_items", "zoo_task_source"]


def zoo_items(config: ZooConfig | None = None) -> list[TaskItem]:
    """All evaluation items of a zoo config, categories in the fixed order."""
    cfg = config or ZooConfig()
    world = make_world(cfg.seed, n_facts=cfg.n_facts)
    out: list[TaskItem] = []
    for c in CATEGORIES:
        n = min(cfg.eval_items, cfg.n_facts) if c == "knowledge" else cfg.eval_items
        out += [
            TaskItem(id=d["id"], category=d["category"], prompt=d["prompt"], answer=d["answer"])
            for d in eval_items(world, c, n)
        ]
    return out


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
    return items


if "zoo" not in TASK_SOURCES:
    TASK_SOURCES.add("zoo", zoo_task_source)

"""The search history in Optuna storage: storage choice, study attributes, trial records.

Storage: ``RUN/study.journal`` (Optuna's journal file, safe for several processes on one
machine through its file lock; SQLite is not used by default because of its write
locking under concurrent writers), or any database URL (``sqlite:///...``,
``postgresql://...``, ``mysql://...``) for many machines. ``optuna-dashboard
RUN/study.journal`` opens the default one.

Study user attributes (``darwin.*``): the gene box and prior (``darwin.box``), the
fitness categories, the config. Trial user attributes: ``genome`` (unit space),
``genes`` (decoded, human readable), ``recipe`` (YAML), ``fitness`` (per category),
``items_used`` / ``items_planned``, ``merge_seconds`` / ``eval_seconds``, ``stopped``,
``ucb_stop_at`` (audit), ``full_fitness`` (audit), ``cached_from`` (a genome seen
before), ``error`` (a failed candidate), ``item_correct`` (one character per scored
item, in the candidate's item order), ``item_values`` (a continuous score's value per
scored item, in that order: the paired stop rule's incumbent).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna

from darwinmerge.errors import ConfigError
from darwinmerge.evolve.optimizer import SearchBox

__all__ = [
    "STUDY_FILE",
    "STUDY_NAME",
    "open_storage",
    "create_study",
    "load_study",
    "trial_records",
    "find_seen",
    "genome_key",
]

STUDY_FILE = "study.journal"
STUDY_NAME = "darwin-evolve"


def open_storage(run_dir: str | Path, url: str | None = None) -> Any:
    """The run's storage: the journal file in ``run_dir`` or the database at ``url``."""
    if url:
        if "://" not in url:
            raise ConfigError(f"storage {url!r}: expected a database URL like sqlite:///x.db")
        return optuna.storages.RDBStorage(url)
    from optuna.storages.journal import JournalFileBackend

    path = Path(run_dir) / STUDY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def create_study(
    storage: Any,
    sampler: optuna.samplers.BaseSampler,
    *,
    box: SearchBox,
    directions: list[str],
    attrs: dict[str, Any],
    name: str = STUDY_NAME,
) -> optuna.Study:
    """A new study with the box and ``attrs`` stored as user attributes."""
    study = optuna.create_study(
        storage=storage,
        sampler=sampler,
        study_name=name,
        directions=[optuna.study.StudyDirection[d.upper()] for d in directions],
    )
    study.set_user_attr("darwin.box", box.to_dict())
    for key, value in attrs.items():
        study.set_user_attr(f"darwin.{key}", value)
    return study


def mark_created(study: optuna.Study) -> None:
    """The last step of creating a study (after its attributes and any enqueued first
    trial): a study without it was cut off while it was being made."""
    study.set_user_attr("darwin.created", True)


def half_created(storage: Any, *, name: str = STUDY_NAME) -> bool:
    """True when a killed run left no usable study ``name`` to resume: none at all (killed
    after the run folder was written, before the study), or one without the
    ``darwin.created`` mark and without a trial (cut off while it was being made; runs
    from before the mark have trials)."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return True
    return not (study.user_attrs.get("darwin.created") or study.trials)


def load_study(
    storage: Any, sampler: optuna.samplers.BaseSampler, *, name: str = STUDY_NAME
) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except KeyError as exc:
        raise ConfigError(
            f"no study {name!r} in the run's storage; start without --resume"
        ) from exc


def stored_box(storage: Any, *, name: str = STUDY_NAME) -> SearchBox:
    """The gene box and prior a study was created with (resume uses it, not a new one)."""
    study = optuna.load_study(study_name=name, storage=storage)
    return SearchBox.from_dict(study.user_attrs["darwin.box"])


def genome_key(genome: list[float], digits: int = 9) -> tuple[float, ...]:
    return tuple(round(float(x), digits) for x in genome)


def find_seen(
    study: optuna.Study, genome: list[float], exclude: int
) -> optuna.trial.FrozenTrial | None:
    """A finished (complete or stopped) trial with the same genome, if any."""
    key = genome_key(genome)
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for t in study.get_trials(deepcopy=False, states=states):
        if t.number == exclude or "genome" not in t.user_attrs:
            continue
        if genome_key(t.user_attrs["genome"]) == key:
            return t
    return None


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def trial_records(study: optuna.Study) -> list[dict[str, Any]]:
    """One JSON-ready record per trial, in trial order (the evolution.json rows)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        u = t.user_attrs
        values = t.values if t.values is not None else None
        if values is None and t.intermediate_values:
            values = [t.intermediate_values[max(t.intermediate_values)]]
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "values": [_clean(v) for v in values] if values is not None else None,
                "genome": u.get("genome"),
                "genes": u.get("genes"),
                "recipe": u.get("recipe"),
                "fitness": u.get("fitness"),
                "merge_seconds": u.get("merge_seconds"),
                "eval_seconds": u.get("eval_seconds"),
                "items_used": u.get("items_used"),
                "items_planned": u.get("items_planned"),
                "stopped": u.get("stopped", False),
                "cached_from": u.get("cached_from"),
                "ucb_stop_at": u.get("ucb_stop_at"),
                "full_fitness": u.get("full_fitness"),
                "error": u.get("error"),
                "item_correct": u.get("item_correct"),
                "item_values": u.get("item_values"),
                "worker": u.get("worker"),
            }
        )
    return rows

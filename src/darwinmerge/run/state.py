"""The run folder's ledger: which phases are finished (``RUN/run.json``).

A phase is marked done only after all its outputs are in place (each phase writes to a
temporary sibling and renames, or writes files atomically), so a killed run resumes at
the first phase that is not marked. The ledger also keeps the run's config: a re-run
with another config is refused (one line naming the changed keys) unless ``force``
starts the run afresh; only keys that cannot change finished work may differ
(:data:`MUTABLE_KEYS`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from darwinmerge.atomic import write_json_atomic
from darwinmerge.errors import ConfigError, OutputExistsError

__all__ = ["LEDGER_FILE", "MUTABLE_KEYS", "REOPENS", "RunLedger"]

LEDGER_FILE = "run.json"
FORMAT = "darwinmerge-run/1"

#: Config keys a re-run may change, and the first phase each one reopens when it changes
#: after that phase finished: a larger search budget continues the same study, a new
#: test table or report is made again; the worker count changes nothing finished.
REOPENS: dict[str, str] = {
    "evolve.trials": "evolve",
    "evolve.time_budget_s": "evolve",
    "evolve.select": "evolve",
    "evolve.workers": "",
    "final": "final",
    "report": "report",
}
MUTABLE_KEYS = tuple(REOPENS)


def _write_json(path: Path, data: Any) -> None:
    write_json_atomic(path, data)


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys, and the evolve section's keys as ``evolve.KEY``; the ``mri``
    section's earlier key names read as their current ones (a ledger written with
    ``mri: {loss: ...}`` is the same config as ``mri: {loss_tokens: ...}``)."""
    from darwinmerge.mri.config import RENAMED_KEYS

    out = {k: v for k, v in config.items() if k != "evolve"}
    mri = out.get("mri")
    if isinstance(mri, dict):
        out["mri"] = {RENAMED_KEYS.get(k, k): v for k, v in mri.items()}
    evolve = config.get("evolve")
    if isinstance(evolve, dict):
        out.update({f"evolve.{k}": v for k, v in evolve.items()})
    return out


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flat(old), _flat(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


@dataclass
class RunLedger:
    """``phases``: name -> {"seconds": float, ...outputs} for every finished phase."""

    path: Path
    config: dict[str, Any]
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, run_dir: Path, config: dict[str, Any], *, force: bool = False) -> RunLedger:
        """The ledger of ``run_dir``: new, or the finished phases of an earlier run of the
        same config (a changed budget, final table or report reopens the phases it
        affects, see :data:`REOPENS`). A folder that is not a run is always refused (it is
        never deleted); a run of another config is refused unless ``force``, which clears
        that run."""
        path = run_dir / LEDGER_FILE
        if run_dir.exists() and not run_dir.is_dir():
            raise OutputExistsError(f"{run_dir} is a file; give a folder for --out")
        if run_dir.exists() and any(run_dir.iterdir()):
            if not path.is_file():
                raise OutputExistsError(
                    f"{run_dir} exists and is not a darwin run folder (no {LEDGER_FILE}); "
                    "choose another --out"
                )
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ConfigError(f"{path}: not a {FORMAT} ledger; choose another --out")
            changed = _diff(data.get("config", {}), config)
            fixed = [k for k in changed if k not in REOPENS]
            if fixed and not force:
                raise ConfigError(
                    f"{run_dir}: this run was made with another config ({', '.join(fixed)} "
                    "changed); use another --out or pass --force to start it afresh"
                )
            if fixed:  # force: a run folder of another config starts afresh
                shutil.rmtree(run_dir)
            else:
                ledger = cls(path, config, dict(data.get("phases", {})))
                reopen = [REOPENS[k] for k in changed if REOPENS[k]]
                if reopen:
                    from darwinmerge.run.pipeline import PHASES

                    first = min(PHASES.index(p) for p in reopen)
                    ledger.forget(*PHASES[first:])
                ledger.save()
                return ledger
        run_dir.mkdir(parents=True, exist_ok=True)
        ledger = cls(path, config)
        ledger.save()
        return ledger

    def done(self, phase: str) -> bool:
        return phase in self.phases

    def mark(self, phase: str, **info: Any) -> None:
        self.phases[phase] = info
        self.save()

    def forget(self, *phases: str) -> None:
        for p in phases:
            self.phases.pop(p, None)
        self.save()

    def save(self) -> None:
        _write_json(self.path, {"format": FORMAT, "config": self.config, "phases": self.phases})

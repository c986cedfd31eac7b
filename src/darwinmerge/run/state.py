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
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from darwinmerge.errors import ConfigError, OutputExistsError

__all__ = ["LEDGER_FILE", "MUTABLE_KEYS", "RunLedger"]

LEDGER_FILE = "run.json"
FORMAT = "darwinmerge-run/1"

#: Top-level config keys a re-run may change: the search budget and the worker count
#: (the study resumes with them), the final table's options and the report switch.
MUTABLE_KEYS = ("final", "report")
MUTABLE_EVOLVE_KEYS = ("trials", "time_budget_s", "workers", "select")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, allow_nan=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if key in MUTABLE_KEYS:
            continue
        a, b = old.get(key), new.get(key)
        if key == "evolve" and isinstance(a, dict) and isinstance(b, dict):
            out += [
                f"evolve.{k}"
                for k in sorted(set(a) | set(b))
                if k not in MUTABLE_EVOLVE_KEYS and a.get(k) != b.get(k)
            ]
        elif a != b:
            out.append(key)
    return out


@dataclass
class RunLedger:
    """``phases``: name -> {"seconds": float, ...outputs} for every finished phase."""

    path: Path
    config: dict[str, Any]
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, run_dir: Path, config: dict[str, Any], *, force: bool = False) -> RunLedger:
        """The ledger of ``run_dir``: new, or the finished phases of an earlier run of the
        same config. Refuses a folder that is not a run, or a run of another config,
        unless ``force`` (which clears the folder)."""
        path = run_dir / LEDGER_FILE
        if run_dir.exists() and any(run_dir.iterdir()):
            if force:
                shutil.rmtree(run_dir)
            elif not path.is_file():
                raise OutputExistsError(
                    f"{run_dir} exists and is not a darwin run folder; choose another --out "
                    "or pass --force to replace it"
                )
            else:
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("format") != FORMAT:
                    raise ConfigError(f"{path}: not a {FORMAT} ledger; pass --force to restart")
                changed = _changed(data.get("config", {}), config)
                if changed:
                    raise ConfigError(
                        f"{run_dir}: this run was made with another config ({', '.join(changed)} "
                        "changed); use another --out or pass --force to start it afresh"
                    )
                ledger = cls(path, config, dict(data.get("phases", {})))
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

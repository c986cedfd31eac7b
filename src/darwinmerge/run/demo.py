"""``darwin demo``: the whole pipeline on the built-in tiny parents, on a CPU.

1. build (or reuse) the zoo: base, a generalist father, a mother fine-tuned on
   REASONING, and a second mother whose narrow fine-tune with a trainable router left
   many experts dead (``mother_collapsed``, the seed's situation);
2. ``darwin run`` on father and mother: MRI, MRI prior, evolution of the seed's genome
   on the fitness split, health check, father / mother / child on the test split;
3. the same on father and the collapsed mother, with dead-expert revival in the genome.

``OUT/final_scores.json`` holds the first pair's table at the top level (``father``,
``mother``, ``child``, ``paired``) and the second pair's under ``"collapsed"``; each
pair's run folder (``OUT/pair``, ``OUT/collapsed``) holds its own table, the per-item
results it was computed from, and its report.

The demo can be run again and again in the same folders: the zoo is reused, each pair's
run skips its finished phases (see :mod:`darwinmerge.run.pipeline`), and both JSON files
are written afresh, so a re-run prints the same tables in seconds. ``OUT/demo.json``
holds this invocation's seconds per step and, per pair, the phases it reused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from darwinmerge.run.config import RunConfig
from darwinmerge.run.final import FINAL_SCORES_FILE
from darwinmerge.run.pipeline import RunResult, run

__all__ = ["DEMO_PAIRS", "DemoResult", "demo_config", "run_demo"]

#: run-folder key -> (mother's folder in the zoo, what the pair shows)
DEMO_PAIRS: dict[str, tuple[str, str]] = {
    "pair": ("mother", "father and the reasoning mother"),
    "collapsed": ("mother_collapsed", "father and the collapsed mother (dead experts, revival)"),
}


@dataclass
class DemoResult:
    out: Path
    runs: dict[str, RunResult]
    scores: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def reused(self) -> dict[str, list[str]]:
        """Per pair, the phases finished by an earlier invocation (skipped this time)."""
        return {key: list(r.skipped) for key, r in self.runs.items()}


def demo_config(zoo: Path, mother: str, *, revive: bool, trials: int = 16) -> RunConfig:
    """The run config of one demo pair (the same as ``examples/zoo-run.yaml`` but for
    the mother's folder, the budget and revival)."""
    return RunConfig.model_validate(
        {
            "parents": {"father": str(zoo / "father"), "mother": str(zoo / mother)},
            "base": str(zoo / "base"),
            "tasks": f"zoo:{zoo}",
            "probes": [f"zoo@{zoo}"],
            "mri": {"loss_tokens": "completion"},
            "prior": {"kind": "mri"},  # every category: the fitness weighs them all
            "evolve": {
                "space": {"kind": "seed", "max_blocks": 3, "revive": "auto" if revive else "off"},
                "optimizer": {"name": "cmaes", "seed": 0},
                "trials": trials,
                "fitness": {"subset": 40, "chunk_size": 40},
                "early_stop": {"enabled": True},
                "backend": {"batch_size": 40},
                "select": {"top_k": 1},
            },
            "health": {"enabled": True, "repair": False},
            "final": {"batch_size": 64},
            "report": True,
        }
    )


def _existing_zoo_config(zoo: Path) -> Any:
    """The config an existing zoo at ``zoo`` was built with (so ``--zoo`` reuses any
    zoo, e.g. a micro zoo), or None (then the default zoo is built or checked)."""
    from pydantic import ValidationError

    from darwinmerge.zoo.build import ZooConfig, read_manifest

    manifest = read_manifest(zoo)
    if manifest is None or not isinstance(manifest.get("config"), dict):
        return None
    data = dict(manifest["config"])
    collapsed = manifest.get("mother_collapsed")
    if isinstance(collapsed, dict) and isinstance(collapsed.get("config"), dict):
        data["collapsed"] = collapsed["config"]  # else: the default second mother is added
    try:
        return ZooConfig.model_validate(data)
    except ValidationError:
        return None  # another format: build_zoo says what to do


def run_demo(
    out: str | Path,
    zoo: str | Path,
    *,
    trials: int = 16,
    log: Callable[[str], None] | None = None,
    on_trial: Callable[[Any], None] | None = None,
    on_pair: Callable[[str, str], None] | None = None,
) -> DemoResult:
    """Build or reuse the zoo at ``zoo`` (an existing zoo is reused with the config it
    was built with; a zoo without the collapsed mother gets her added), then
    ``darwin run`` each demo pair into ``out/<pair>``; write ``out/final_scores.json``
    and ``out/demo.json``. A second call with the same arguments reuses every finished
    phase and returns the same scores."""
    from darwinmerge.atomic import write_json_atomic
    from darwinmerge.zoo.build import build_zoo

    say = log or (lambda _m: None)
    out, zoo = Path(out), Path(zoo)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    build_zoo(zoo, _existing_zoo_config(zoo), log=say)
    seconds["zoo"] = time.perf_counter() - start
    runs: dict[str, RunResult] = {}
    for key, (mother, title) in DEMO_PAIRS.items():
        if on_pair is not None:
            on_pair(key, title)
        start = time.perf_counter()
        cfg = demo_config(zoo.resolve(), mother, revive=key == "collapsed", trials=trials)
        runs[key] = run(cfg, out / key, log=say, on_trial=on_trial)
        seconds[key] = time.perf_counter() - start
    first, *rest = DEMO_PAIRS
    scores: dict[str, Any] = dict(runs[first].final)
    for key in rest:
        scores[key] = runs[key].final
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out, runs, scores, seconds)
    # both files are derived from the pairs' run folders: a re-run writes them again
    write_json_atomic(out / FINAL_SCORES_FILE, scores)
    write_json_atomic(out / "demo.json", {"seconds": seconds, "reused": result.reused})
    return result

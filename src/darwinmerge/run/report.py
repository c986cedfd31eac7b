"""The run report: one self-contained HTML page per run (``RUN/report.html``).

:func:`run_report_sections` reads a run folder (layout in :mod:`darwinmerge.run.pipeline`)
and returns the report's info objects: the findings in plain words first, then the MRI
of both parents (their maps side by side), the prior, the evolution curve, the final
recipe drawn per layer and component, the health check and the final table. A phase
whose files are missing (health disabled, a run stopped early) is named in the findings
and its section is left out. :func:`write_run_report` renders the page atomically.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from darwinmerge.errors import ConfigError, DarwinError

__all__ = ["REPORT_FILE", "RunFiles", "load_run_files", "run_report_sections", "write_run_report"]

REPORT_FILE = "report.html"
T = TypeVar("T")


@dataclass
class RunFiles:
    """What a run folder holds, loaded (``None`` where a phase's file is missing);
    ``problems``: one line per missing or unreadable phase output."""

    run_dir: Path
    names: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    scan_a: Any = None
    scan_b: Any = None
    comparison: Any = None
    weights: Any = None
    prior: dict[str, Any] | None = None
    evolution: dict[str, Any] | None = None
    recipe: Any = None
    repaired: bool = False
    verdict: Any = None
    repair: dict[str, Any] | None = None
    scores: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    def label(self, role: str) -> str:
        name = self.names.get(role, role)
        return role if name == role else f"{role} ({name})"

    @property
    def num_layers(self) -> int | None:
        for obj in (self.comparison, self.scan_a, self.weights, self.verdict):
            if obj is not None:
                return int(obj.num_layers)
        child = self.run_dir / "evolve" / "child" / "config.json"
        if child.is_file():
            cfg = json.loads(child.read_text(encoding="utf-8"))
            n = cfg.get("num_hidden_layers") or (cfg.get("text_config") or {}).get(
                "num_hidden_layers"
            )
            return int(n) if n else None
        return None

    @property
    def components(self) -> tuple[str, ...]:
        from darwinmerge.report.recipe_section import DEFAULT_COMPONENTS

        if self.weights is not None and self.weights.components:
            return tuple(self.weights.components)
        if self.scan_a is not None:
            return (
                ("attn", "norm", "router", "experts")
                if self.scan_a.is_moe
                else ("attn", "norm", "dense_mlp")
            )
        return DEFAULT_COMPONENTS


def _try(files: RunFiles, what: str, path: Path, load: Callable[[], T]) -> T | None:
    if not path.exists():
        files.problems.append(f"{what} (no {path.relative_to(files.run_dir)})")
        return None
    try:
        return load()
    except (DarwinError, ValueError, KeyError, TypeError, OSError) as exc:
        files.problems.append(f"{what} ({path.relative_to(files.run_dir)} unreadable: {exc})")
        return None


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def load_run_files(run_dir: str | Path) -> RunFiles:
    """Load every phase output of ``run_dir`` that exists."""
    from darwinmerge.health.verdict import Verdict
    from darwinmerge.merge.recipe import Recipe
    from darwinmerge.mri.compare import ComparisonScan
    from darwinmerge.mri.scan import Scan
    from darwinmerge.mri.weights import WeightScan

    run = Path(run_dir)
    known = ("run.json", "mri", "prior.json", "evolve", "health", "final_scores.json")
    if not run.is_dir() or not any((run / k).exists() for k in known):
        raise ConfigError(
            f"{run}: not a darwin run folder (none of {', '.join(known)}); give the --out "
            "folder of `darwin run`"
        )
    ledger = _json(run / "run.json") if (run / "run.json").is_file() else {}
    config = dict(ledger.get("config") or {})
    parents = list((config.get("parents") or {}).keys())
    names = {"father": parents[0], "mother": parents[1]} if len(parents) == 2 else {}
    f = RunFiles(run, names, config, dict(ledger.get("phases") or {}))
    mri = run / "mri"
    f.scan_a = _try(f, "MRI of the father", mri / "scan_a.json", lambda: Scan.load(mri, "scan_a"))
    f.scan_b = _try(f, "MRI of the mother", mri / "scan_b.json", lambda: Scan.load(mri, "scan_b"))
    f.comparison = _try(
        f, "MRI comparison", mri / "comparison.json", lambda: ComparisonScan.load(mri)
    )
    f.weights = _try(f, "weight scan", mri / "weights.json", lambda: WeightScan.load(mri))
    f.prior = _try(f, "prior", run / "prior.json", lambda: _json(run / "prior.json"))
    evo = run / "evolve" / "evolution.json"
    f.evolution = _try(f, "evolution", evo, lambda: _json(evo))
    repaired = run / "health" / "repaired_recipe.yaml"
    recipe_path = repaired if repaired.is_file() else run / "evolve" / "winner_recipe.yaml"
    f.repaired = repaired.is_file()
    f.recipe = _try(
        f,
        "final recipe",
        recipe_path,
        lambda: Recipe.from_yaml(recipe_path.read_text(), source=str(recipe_path)),
    )
    verdict = run / "health" / "verdict.json"
    f.verdict = _try(f, "health check", verdict, lambda: Verdict.load(verdict))
    if (run / "health" / "repair.json").is_file():
        f.repair = _json(run / "health" / "repair.json")
    scores = run / "final_scores.json"
    f.scores = _try(f, "final scores", scores, lambda: _json(scores))
    if not names and f.recipe is not None and len(f.recipe.parents) >= 2:
        f.names = {"father": f.recipe.parents[0].name, "mother": f.recipe.parents[1].name}
    return f


def _pair_parents(section: Any, labels: Sequence[str]) -> Any:
    """The section with each per-parent pair of maps put side by side (one row)."""
    from darwinmerge.report.info import RowInfo, SectionInfo

    blocks = list(section.blocks)
    for prefix in ("Probe x layer importance (BI) - ", "Expert utilisation - "):
        titles = [prefix + lab for lab in labels]
        idx = [i for i, b in enumerate(blocks) if getattr(b, "title", None) in titles]
        if len(idx) == 2:
            pair = (blocks[idx[0]], blocks[idx[1]])
            blocks[idx[0]] = RowInfo(prefix.rstrip(" -"), pair)
            del blocks[idx[1]]
    return SectionInfo(section.phase, section.title, tuple(blocks))


def _recipe_blocks(f: RunFiles, recipe: Any, prefix: str) -> list[Any]:
    from darwinmerge.report.info import HeatmapInfo
    from darwinmerge.report.recipe_section import recipe_section

    sec = recipe_section(recipe, f.num_layers or 1, components=f.components)
    return [
        dataclasses.replace(b, title=f"{prefix}: {b.title.removeprefix('Recipe: ')}")
        for b in sec.blocks
        if isinstance(b, HeatmapInfo)
    ]


def run_report_sections(run_dir: str | Path) -> list[Any]:
    """The run report's sections (``SectionInfo``), findings first."""
    return _sections(load_run_files(run_dir))


def _sections(f: RunFiles) -> list[Any]:
    import darwinmerge.report as R  # noqa: N812
    from darwinmerge.merge.recipe import Recipe
    from darwinmerge.report.findings_section import (
        final_finding,
        health_finding,
        mri_finding,
        prior_finding,
        search_finding,
    )
    from darwinmerge.report.recipe_section import revived_experts

    sections: list[Any] = []
    text: dict[str, str | None] = dict.fromkeys(("mri", "prior", "search", "health", "final"))
    layers = f.num_layers
    scans = {role: s for role, s in (("father", f.scan_a), ("mother", f.scan_b)) if s is not None}
    if scans:
        labelled = {f.label(role): s for role, s in scans.items()}
        named = (
            dataclasses.replace(f.comparison, model_a=f.label("father"), model_b=f.label("mother"))
            if f.comparison is not None
            else None
        )  # the parents' names in the titles, not their paths
        sec = R.mri_section(labelled, named, f.weights)
        sections.append(_pair_parents(sec, list(labelled)))
    if f.comparison is not None:
        text["mri"] = mri_finding(f.names, f.comparison, scans)
    if f.prior is not None:
        text["prior"] = prior_finding(f.prior)
        extra: list[Any] = []
        if f.prior.get("start_recipe") and layers:
            try:
                start = Recipe.from_yaml(f.prior["start_recipe"], source="prior.json")
                extra = _recipe_blocks(f, start, "Start recipe")
            except DarwinError as exc:
                f.problems.append(f"the start recipe drawing ({exc})")
        sections.append(R.prior_section(f.prior, extra))
    if f.evolution is not None:
        sections.append(R.evolution_section(f.evolution))
    revived: list[Any] = []
    if f.recipe is not None and layers:
        try:
            revived = revived_experts(f.recipe, scan_dir=f.run_dir / "mri")
        except DarwinError as exc:
            f.problems.append(f"the revived experts ({exc})")
        sections.append(
            R.recipe_section(
                f.recipe,
                layers,
                components=f.components,
                revived=revived,
                num_experts=int(getattr(f.scan_a, "num_experts", 0) or 0),
                title="The final recipe" + (" (after the health repair)" if f.repaired else ""),
                note="Repaired by the health check's prescription" if f.repaired else "",
            )
        )
    if f.evolution is not None and layers:
        text["search"] = search_finding(
            f.evolution,
            f.recipe,
            layers,
            components=f.components,
            revived=revived,
            comparison=f.comparison,
            repaired=f.repaired,
            keep=((f.config.get("evolve") or {}).get("fitness") or {}).get("keep"),
        )
    if f.verdict is not None:
        text["health"] = health_finding(f.verdict, f.repair)
        sections.append(
            R.health_section(
                dataclasses.replace(
                    f.verdict, parent_a=f.label("father"), parent_b=f.label("mother")
                )
            )
        )
    if f.scores is not None:
        text["final"] = final_finding(f.scores, f.names)
        sections.append(R.results_section(f.scores, names=f.names))
    missing = list(f.problems)
    if f.verdict is None and f.config.get("health", {}).get("enabled") is False:
        missing = [
            m if not m.startswith("health check") else "health check (disabled in the config)"
            for m in missing
        ]
    findings = R.findings_section(**text, missing=missing)  # type: ignore[arg-type]
    return [findings, *sections]


def _meta(f: RunFiles) -> dict[str, Any]:
    meta: dict[str, Any] = {"run": str(f.run_dir)}
    parents = f.config.get("parents") or {}
    for role in ("father", "mother"):
        name = f.names.get(role)
        if name:
            path = parents.get(name, "?")
            meta[role] = path if name == role else f"{name}: {path}"
    if f.config.get("base"):
        meta["base"] = f.config["base"]
    if f.phases:
        meta["phases"] = ", ".join(
            f"{p} ({float(info.get('seconds', 0)):.0f} s)" for p, info in f.phases.items()
        )
    return meta


def write_run_report(
    run_dir: str | Path, *, force: bool = True, out: str | Path | None = None
) -> Path:
    """Render the run report to ``out`` (default ``RUN/report.html``), atomically;
    ``force=False`` refuses an existing file."""
    from darwinmerge.report.html import write_report

    run = Path(run_dir)
    files = load_run_files(run)
    sections = _sections(files)
    title = f"darwin run report: {run.resolve().name}"
    target = Path(out) if out is not None else run / REPORT_FILE
    return write_report(target, title, sections, meta=_meta(files), force=force)

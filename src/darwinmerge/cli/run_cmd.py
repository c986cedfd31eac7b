"""``darwin run CONFIG.yaml --out RUN``: the whole pipeline, resumable phase by phase."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["register", "run_command", "print_final_table"]


def print_final_table(
    console: Any, scores: Mapping[str, Any], title: str, *, wide: bool = False
) -> None:
    """The final test-split table (father, mother, child, paired tests).

    Compact (fits 80 columns): the scores with the child's difference from each parent
    and its exact paired p, then a second table of 95% intervals and discordant items.
    ``wide``: one table with everything in each cell (about 150 columns)."""
    from rich.table import Table

    from darwinmerge.cli.tables import narrow_table
    from darwinmerge.run.final import final_intervals_table, final_scores_table, final_table

    if wide:
        header, rows = final_table(scores)
        table = Table(title=title, title_justify="left")
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        _print_start(console, scores)
        return
    console.print(title)
    console.print(narrow_table(*final_scores_table(scores)))
    console.print("vs PARENT: child - parent; p: exact paired test (child against that parent)")
    console.print()
    console.print("95% intervals; items only the child / only the parent got right")
    console.print(narrow_table(*final_intervals_table(scores)))
    _print_start(console, scores)


def _print_start(console: Any, scores: Mapping[str, Any]) -> None:
    from darwinmerge.report.findings_section import start_finding

    text = start_finding(scores)
    if text is not None:
        console.print()
        console.print(f"The search against its own start (overall): {text}")


def run_command(
    config: Annotated[Path, typer.Argument(help="A run YAML (see examples/zoo-run.yaml).")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="key=value overrides, e.g. evolve.trials=20 prior.target=reasoning"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")] = Path("runs/run"),
    force: Annotated[
        bool, typer.Option("--force", help="Start afresh in a folder that holds another run.")
    ] = False,
    stop_after: Annotated[
        str | None,
        typer.Option(help="End after this phase (mri, prior, evolve, health, final, report)."),
    ] = None,
    wide: Annotated[
        bool,
        typer.Option("--wide", help="One wide final table (intervals in each cell, ~150 columns)."),
    ] = False,
) -> None:
    """The whole pipeline: MRI, prior, evolution, health check, final table, report.

    A re-run skips finished phases; a killed run resumes where it stopped."""
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from darwinmerge.run.config import load_run_config
    from darwinmerge.run.pipeline import run

    cfg = load_run_config(config, list(overrides or []))
    hf_logging.set_verbosity_error()  # e.g. the pure-torch Gated DeltaNet fallback notes
    hf_logging.disable_progress_bar()
    console = Console(stderr=True, soft_wrap=True)

    def on_trial(event: Any) -> None:
        best = "-" if event.best is None else f"{event.best:.4f}"
        console.print(
            f"  trial {event.number:>4}  {event.finished}/{event.budget}  {event.state:<8} "
            f"fitness {event.fitness_text(4)}  best {best}  "
            f"{event.merge_seconds + event.eval_seconds:5.2f} s"
        )

    result = run(cfg, out, force=force, log=console.print, on_trial=on_trial, stop_after=stop_after)
    if not result.finished:
        console.print(
            f"stopped after {result.stopped_after}; run the same command without "
            "--stop-after to continue"
        )
        typer.echo(str(result.run_dir))
        return
    print_final_table(Console(), result.final, f"test split: {out}", wide=wide)
    console.print(f"child:  {result.child}")
    console.print(f"recipe: {result.recipe}")
    if result.report is not None:
        console.print(f"report: {result.report}")
    typer.echo(str(result.run_dir))


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)

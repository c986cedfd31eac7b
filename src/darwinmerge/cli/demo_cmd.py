"""``darwin demo``: the main job on the built-in tiny parents, on a CPU.

It builds (or reuses) the zoo and runs the whole pipeline (``darwin run``: MRI, MRI
prior, evolution, health check, test-split table, report) on two pairs: father and the
reasoning mother, then father and the collapsed mother (dead experts, revival allowed).
The library function is :func:`darwinmerge.run.demo.run_demo`; this module only prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def demo(
    out: Annotated[Path, typer.Option(help="Working folder of the demo.")] = Path("runs/demo"),
    zoo: Annotated[Path, typer.Option(help="Zoo folder (built once, then reused).")] = Path(
        "runs/zoo"
    ),
    trials: Annotated[int, typer.Option(min=1, help="Candidates per evolution.")] = 16,
    wide: Annotated[
        bool,
        typer.Option("--wide", help="One wide final table (intervals in each cell, ~150 columns)."),
    ] = False,
) -> None:
    """Breed a child of the tiny parents, twice (the first run trains them).

    Prints the test-split tables: father, mother, child, intervals, exact paired tests.
    Run it again to see the tables: finished work in OUT and ZOO is reused."""
    import torch
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from darwinmerge.cli.run_cmd import print_final_table
    from darwinmerge.run.demo import run_demo

    torch.set_num_threads(1)
    # the tiny parents run transformers' pure-torch Gated DeltaNet path on purpose
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    console = Console()

    def on_pair(key: str, title: str) -> None:
        console.rule(f"[bold]darwin run: {title}")

    def on_trial(event: Any) -> None:
        best = "-" if event.best is None else f"{event.best:.3f}"
        if event.state == "pruned":  # one line of a log file's 80 columns
            console.print(
                f"  candidate {event.finished:>2}/{event.budget}  stopped   behind {best} after "
                f"{event.items_used} items (partial {event.fitness or 0.0:.3f})"
            )
            return
        console.print(
            f"  candidate {event.finished:>2}/{event.budget}  {event.state:<8}  fitness "
            f"{event.fitness_text()}  best {best}  merge {event.merge_seconds:.1f} s  "
            f"eval {event.eval_seconds:.1f} s"
        )

    result = run_demo(
        out, zoo, trials=trials, log=console.print, on_trial=on_trial, on_pair=on_pair
    )
    console.rule("[bold]done")
    for key, run in result.runs.items():
        print_final_table(console, run.final, f"test split, {key}: {run.run_dir}", wide=wide)
        console.print(f"report: {run.report}   child: {run.child}")
    console.print(f"scores: {result.out / 'final_scores.json'}")
    reused = [k for k, phases in result.reused.items() if phases]
    if reused:
        console.print(f"reused: finished phases of {', '.join(reused)} from an earlier run")
    console.print("time:   " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

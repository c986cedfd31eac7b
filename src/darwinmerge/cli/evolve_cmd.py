"""``darwin evolve CONFIG.yaml --out RUN``: search merge genomes, pick the winner honestly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["register", "evolve_command"]


def _fmt(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.4f}"


def evolve_command(
    config: Annotated[Path, typer.Argument(help="An evolve YAML (see examples/zoo-evolve.yaml).")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="key=value overrides, e.g. trials=20 optimizer.seed=3"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")] = Path("runs/evolve"),
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out (same study).")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing run folder.")] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Evaluation workers (Ray actors when > 1).")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start local Ray).")
    ] = None,
) -> None:
    """Evolve a child of two parents by searching merge genomes on the fitness split.

    Then the best candidates and both parents are scored once on the test split."""
    from rich.console import Console

    from darwinmerge.evolve.api import evolve
    from darwinmerge.evolve.config import load_evolve_config

    extra = list(overrides or [])
    if workers is not None:
        extra.append(f"workers.n={workers}")
    if ray_address is not None:
        extra.append(f"workers.ray_address={ray_address}")
    cfg = load_evolve_config(config, extra)
    console = Console(stderr=True, soft_wrap=True)

    def on_trial(event: Any) -> None:
        secs = event.merge_seconds + event.eval_seconds
        note = " (seen before)" if event.cached else ""
        if event.error:
            note = f" ({event.error[:80]})"
        console.print(
            f"trial {event.number:>4}  {event.finished}/{event.budget}  {event.state:<8} "
            f"fitness {event.fitness_text(4)}  best {_fmt(event.best)}  "
            f"{secs:6.2f} s (merge {event.merge_seconds:.2f} + eval {event.eval_seconds:.2f})  "
            f"items {event.items_used}{note}"
        )

    result = evolve(cfg, out, resume=resume, force=force, on_trial=on_trial, log=console.print)
    console.print(
        f"winner: trial {result.winner}, fitness {_fmt(result.winner_fitness)} "
        f"({result.trials} trials, {result.seconds:.1f} s)"
    )
    es = result.early_stop
    console.print(
        f"early stopping: {es.get('stopped', 0)} candidates stopped, "
        f"{es.get('items_saved', 0)} item evaluations saved"
    )
    sel = result.selection
    if sel is not None:
        for row in sel.candidates:
            o = row["test"]["overall"]
            overall = {p: v["rows"]["overall"] for p, v in row["vs"].items()}
            vs = ", ".join(
                f"vs {p}: {r['diff']:+.4f} (p={r['p_value']:.3g})" for p, r in overall.items()
            )
            console.print(
                f"test: trial {row['trial']:>4}  {o['score']:.4f} "
                f"[{o['ci_low']:.4f}, {o['ci_high']:.4f}]  {vs}"
            )
        for p, scores in sel.parents.items():
            o = scores["overall"]
            console.print(
                f"test: parent {p:<6} {o['score']:.4f} [{o['ci_low']:.4f}, {o['ci_high']:.4f}]"
            )
        console.print(f"selection gap (winner fitness - test): {sel.selection_gap:+.4f}")
    if result.child is not None:
        console.print(f"child written to {result.child}")
    typer.echo(str(result.run_dir))


def register(app: typer.Typer) -> None:
    app.command("evolve")(evolve_command)

"""``darwin demo``: the main job on the built-in tiny parents, on a CPU.

It chains the standalone commands, each a step a user can rerun by hand:

1. ``darwin zoo build``: tiny qwen3_5_moe parents trained here (base, a generalist
   father, a mother fine-tuned on reasoning), cached;
2. ``darwin mri compare``: Model MRI of both parents (layer importance per probe
   category, MoE health, weight-space deltas, layer-swap scan) and an HTML report;
3. ``darwin merge``: the zoo's hand-made per-component recipe;
4. ``darwin eval``: child vs father vs mother on the held-out test split, with 95%
   intervals and exact paired tests.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def _step(title: str, argv: list[str]) -> float:
    from darwinmerge.cli.app import app

    console.rule(f"[bold]{title}")
    console.print("[dim]$ darwin " + " ".join(argv))
    start = time.perf_counter()
    app(argv, standalone_mode=False)
    return time.perf_counter() - start


def demo(
    out: Annotated[Path, typer.Option(help="Working folder of the demo.")] = Path("runs/demo"),
    zoo: Annotated[Path, typer.Option(help="Zoo folder (built once, then reused).")] = Path(
        "runs/zoo"
    ),
    mri: Annotated[bool, typer.Option("--mri/--no-mri", help="Run the Model MRI step.")] = True,
) -> None:
    """Run the whole chain on the built-in tiny parents (CPU; the first run trains them)."""
    import torch
    from transformers.utils import logging as hf_logging

    from darwinmerge.zoo.recipes import WINNING, to_recipe

    torch.set_num_threads(1)
    # the tiny parents run transformers' pure-torch Gated DeltaNet path on purpose
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    timings["zoo"] = _step(
        "1/4 zoo: tiny parents in the seed's architecture", ["zoo", "build", str(zoo)]
    )
    father, mother, base = zoo / "father", zoo / "mother", zoo / "base"
    if mri:
        timings["mri"] = _step(
            "2/4 Model MRI: scan both parents",
            [
                "mri",
                "compare",
                str(father),
                str(mother),
                "--base",
                str(base),
                "--probes",
                f"zoo@{zoo}",
                "--out",
                str(out / "mri"),
                "--force",
            ],
        )
    recipe_path = out / "recipe.yaml"
    recipe_path.write_text(to_recipe(WINNING, father.resolve(), mother.resolve()).to_yaml())
    timings["merge"] = _step(
        f"3/4 merge: hand-made recipe '{WINNING.name}'",
        ["merge", str(recipe_path), str(out / "child"), "--force"],
    )
    timings["eval"] = _step(
        "4/4 evaluate on the held-out test split",
        [
            "eval",
            str(out / "child"),
            str(father),
            str(mother),
            "--tasks",
            f"zoo:{zoo}",
            "--split",
            "test",
            "--out",
            str(out / "eval.json"),
            "--force",
        ],
    )
    console.rule("[bold]done")
    console.print(f"recipe:  {recipe_path}  ({WINNING.description})")
    console.print(f"child:   {out / 'child'}")
    if mri:
        console.print(f"MRI:     {out / 'mri' / 'report.html'}")
    console.print(f"scores:  {out / 'eval.json'}")
    console.print("time:    " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

"""``darwin zoo build OUT``: train (or reuse) the tiny demo parents base / father / mother."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register", "zoo_build"]

zoo_app = typer.Typer(help="The tiny demo parents the project trains itself.", no_args_is_help=True)


@zoo_app.command("build")
def zoo_build(
    out: Annotated[
        Path, typer.Argument(help="Folder to write base/, father/, mother/, tasks/, zoo.json.")
    ],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the world, data and init.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an OUT that is not this zoo.")
    ] = False,
) -> None:
    """Build the zoo deterministically on one CPU thread (a few minutes), or reuse it."""
    from rich.console import Console

    from darwinmerge.zoo.build import ZooConfig, build_zoo

    console = Console(stderr=True)
    manifest = build_zoo(out, ZooConfig(seed=seed), force=force, log=console.print)
    for name, digest in manifest["weights_sha256"].items():
        typer.echo(f"{name:7s} {out / name}  sha256 {digest[:16]}")
    typer.echo(f"tasks   {out / 'tasks'}  ({sum(manifest['tasks'].values())} items)")


def register(app: typer.Typer) -> None:
    app.add_typer(zoo_app, name="zoo")

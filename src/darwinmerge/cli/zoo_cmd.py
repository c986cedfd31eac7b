"""``darwin zoo build OUT``: train (or reuse) the tiny demo parents base / father / mother
and the second mother ``mother_collapsed``. ``darwin zoo suite OUT --zoo ZOO``: the
merge-problem suite built from a zoo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register", "zoo_build", "zoo_suite"]

zoo_app = typer.Typer(help="The tiny demo parents the project trains itself.", no_args_is_help=True)


@zoo_app.command("build")
def zoo_build(
    out: Annotated[
        Path | None,
        typer.Argument(
            help="Folder to write base/, father/, mother/, mother_collapsed/, tasks/, zoo.json "
            "(or --out).",
            show_default=False,
        ),
    ] = None,
    out_option: Annotated[
        Path | None, typer.Option("--out", "-o", help="The zoo folder (the same as OUT).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the world, data and init.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an OUT that is not this zoo.")
    ] = False,
) -> None:
    """Build the zoo deterministically on one CPU thread (a few minutes), or reuse it."""
    from rich.console import Console

    from darwinmerge.cli.options import output_folder
    from darwinmerge.zoo.build import MOTHER_COLLAPSED, ZooConfig, build_zoo

    out, _ = output_folder(out, out_option)
    console = Console(stderr=True)
    manifest = build_zoo(out, ZooConfig(seed=seed), force=force, log=console.print)
    hashes = dict(manifest["weights_sha256"])
    if MOTHER_COLLAPSED in manifest:
        hashes[MOTHER_COLLAPSED] = manifest[MOTHER_COLLAPSED]["weights_sha256"]
    for name, digest in hashes.items():
        typer.echo(f"{name:16s} {out / name}  sha256 {digest[:16]}")
    typer.echo(f"{'tasks':16s} {out / 'tasks'}  ({sum(manifest['tasks'].values())} items)")


@zoo_app.command("suite")
def zoo_suite(
    out: Annotated[
        Path | None,
        typer.Argument(
            help="Folder to write the suite into: suite.json, tasks/, problems (or --out).",
            show_default=False,
        ),
    ] = None,
    out_option: Annotated[
        Path | None, typer.Option("--out", "-o", help="The suite folder (the same as OUT).")
    ] = None,
    zoo: Annotated[
        Path, typer.Option("--zoo", help="A built zoo (`darwin zoo build`) to start from.")
    ] = Path("runs/zoo"),
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Build only this problem (repeatable)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an OUT that is not this suite.")
    ] = False,
    jobs: Annotated[
        int,
        typer.Option("--jobs", min=1, help="Problems built at once (one process each)."),
    ] = 1,
) -> None:
    """Build the merge-problem suite from a zoo (parent pairs with a known structure, for
    `benchmarks/search_suite.py`), or reuse it."""
    from rich.console import Console

    from darwinmerge.cli.options import output_folder
    from darwinmerge.zoo.problems import build_suite, problem_parents

    out, _ = output_folder(out, out_option)
    console = Console(stderr=True)
    manifest = build_suite(
        out, zoo, only=tuple(only) if only else None, force=force, jobs=jobs, log=console.print
    )
    for name, entry in manifest["problems"].items():
        paths = problem_parents(out, name)
        tag = "  (hard case)" if entry["hard"] else ""
        typer.echo(f"{name:16s} a={paths['a']}  b={paths['b']}  base={paths['base']}{tag}")


def register(app: typer.Typer) -> None:
    app.add_typer(zoo_app, name="zoo")

"""``darwin merge`` and ``darwin validate``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from darwinmerge.merge.options import MergeOptions

console = Console(stderr=True)


ConfigArg = Annotated[
    Path, typer.Argument(help="A darwin recipe or a mergekit YAML (recognised automatically).")
]
OverridesArg = Annotated[
    list[str] | None, typer.Argument(help="key=value overrides, e.g. seed=3 parameters.t=0.4")
]


def merge(
    config: ConfigArg,
    out: Annotated[
        Path | None,
        typer.Argument(help="Output folder for the child model (or --out).", show_default=False),
    ] = None,
    overrides: OverridesArg = None,
    out_option: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (the same as OUT).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    threads: Annotated[int, typer.Option(min=1, help="Tensors merged in parallel.")] = 1,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Read .bin/.pt (pickle) checkpoints.")
    ] = False,
    check_finite: Annotated[
        bool,
        typer.Option("--check-finite/--no-check-finite", help="Refuse parents with NaN/inf."),
    ] = True,
    shard_size: Annotated[str, typer.Option(help="Maximum shard size, e.g. 2GB, 500MB.")] = "5GB",
    page_cache: Annotated[
        str,
        typer.Option(
            help="Parents' page cache: drop (read past it, O_DIRECT where the file system "
            "allows, else drop what was read; streaming parents larger than memory), keep "
            "(repeated merges of parents that fit), auto (drop when the parents add up to "
            "more than half the available memory)."
        ),
    ] = "auto",
    export_mergekit: Annotated[
        Path | None,
        typer.Option(
            "--export-mergekit",
            help="Also write the recipe as a mergekit YAML to this file (refused in one "
            "line, before merging, where mergekit cannot express it).",
        ),
    ] = None,
    kernels: Annotated[
        str,
        typer.Option(
            help="on: the fast kernels where they apply (the same results); off: the "
            "reference maths only (slower)."
        ),
    ] = "on",
    kernel: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=on|off for one kernel (repeatable): streamed_task_arithmetic, "
            "numba, streamed_slerp."
        ),
    ] = None,
    direct_reads: Annotated[
        bool,
        typer.Option(
            "--direct-reads/--no-direct-reads",
            help="With the page cache dropped, read past it (O_DIRECT) where allowed.",
        ),
    ] = True,
) -> None:
    """Merge parent checkpoints into a Hugging Face model folder.

    The output folder is OUT or --out: `darwin merge CONFIG OUT` as in mergekit, or
    `darwin merge CONFIG --out OUT key=value ...`."""
    from darwinmerge.cli.options import output_folder
    from darwinmerge.errors import ConfigError
    from darwinmerge.merge.api import PAGE_CACHE_MODES, merge_to_disk
    from darwinmerge.merge.mergekit_io import load_any_config

    if page_cache not in PAGE_CACHE_MODES:
        raise ConfigError(
            f"--page-cache {page_cache!r}: expected one of {', '.join(PAGE_CACHE_MODES)}"
        )
    options = merge_options(kernels, kernel or [], direct_reads=direct_reads)
    out, overrides = output_folder(out, out_option, overrides)
    recipe = load_any_config(config, overrides)
    if export_mergekit is not None:
        _export_mergekit(recipe, export_mergekit)
    max_bytes = _parse_size(shard_size)
    with Progress(
        TextColumn("[bold]merge"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("planning", total=None)

        def on_plan(plan: object) -> None:
            bar.update(task, total=len(plan.jobs), description="")  # type: ignore[attr-defined]

        def on_job(job: object) -> None:
            bar.update(task, advance=1, description=job.name)  # type: ignore[attr-defined]

        result = merge_to_disk(
            recipe,
            out,
            force=force,
            device=device,
            threads=threads,
            allow_pickle=allow_pickle,
            check_finite=check_finite,
            max_shard_bytes=max_bytes,
            page_cache=page_cache,
            on_plan=on_plan,
            progress=on_job,
            options=options,
        )
        bar.update(task, description="done")
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(
        f"wrote {result.tensors} tensors ({result.bytes_written / 2**20:.1f} MiB) "
        f"to {result.out_dir} in {result.seconds:.1f} s"
    )


def merge_options(kernels: str, kernel: list[str], *, direct_reads: bool) -> MergeOptions:
    """The merge's options from ``--kernels``, ``--kernel NAME=on|off`` and
    ``--direct-reads``; a wrong value is refused in one line."""
    from pydantic import ValidationError

    from darwinmerge.errors import ConfigError
    from darwinmerge.merge.options import KERNEL_NAMES, MergeOptions

    switch = {"on": True, "off": False}
    if kernels not in switch:
        raise ConfigError(f"--kernels {kernels!r}: expected on or off")
    chosen = dict.fromkeys(KERNEL_NAMES, switch[kernels])
    for item in kernel:
        name, _, value = item.partition("=")
        if value not in switch:
            raise ConfigError(f"--kernel {item!r}: expected NAME=on or NAME=off")
        chosen[name] = switch[value]
    try:
        return MergeOptions(kernels=chosen, direct_reads=direct_reads)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--kernel: {message}") from None


def validate(
    config: ConfigArg,
    overrides: OverridesArg = None,
    check_parents: Annotated[
        bool,
        typer.Option(
            "--check-parents/--no-check-parents", help="Also open the parents and plan the merge."
        ),
    ] = True,
) -> None:
    """Check a recipe, an evolve config or a run config without running it.

    With the parents: plan the merge, or build the genome space and the fitness items.
    Without them nothing imports torch (the method declarations are torch-free)."""
    from darwinmerge.merge.mergekit_io import load_any_config

    kind = _config_kind(config)
    if kind == "run":  # a whole-pipeline config: its phases and the search's checks
        from darwinmerge.run.config import check_run_config, load_run_config

        run_cfg = load_run_config(config, overrides or [], check_paths=check_parents)
        for line in check_run_config(run_cfg, build=check_parents):
            console.print(line)
        return
    if kind == "evolve":  # an evolve config: the search's own checks
        from darwinmerge.evolve.check import check_evolve_config
        from darwinmerge.evolve.config import load_evolve_config

        evolve_cfg = load_evolve_config(config, overrides or [], check_paths=check_parents)
        for line in check_evolve_config(evolve_cfg, build=check_parents):
            console.print(line)
        return
    recipe = load_any_config(config, overrides or [])
    if check_parents:
        from contextlib import ExitStack

        from darwinmerge.merge.api import open_sources
        from darwinmerge.merge.planner import plan_merge

        with ExitStack() as stack:
            plan = plan_merge(recipe, open_sources(recipe, stack))
        console.print(
            f"ok: {len(plan.jobs)} tensors, family {plan.out_arch.family}, "
            f"{plan.out_arch.num_layers} layers"
        )
        for note in plan.notes:
            console.print(f"note: {note}")
    else:
        console.print("ok")
    typer.echo(recipe.to_yaml())


def _export_mergekit(recipe: object, path: Path) -> None:
    """``--export-mergekit``: the recipe as mergekit YAML, or one line saying what
    mergekit cannot express (exit 1, nothing merged)."""
    from darwinmerge.errors import ConfigError
    from darwinmerge.merge.mergekit_io import write_mergekit

    try:
        write_mergekit(recipe, path)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise ConfigError(
            f"--export-mergekit {path}: mergekit cannot express this: {exc}"
        ) from None
    console.print(f"wrote mergekit config {path}")


def _config_kind(path: Path) -> str:
    """``run``, ``evolve`` or ``recipe`` (a darwin recipe or a mergekit YAML)."""
    import yaml

    from darwinmerge.evolve.config import is_evolve_config
    from darwinmerge.run.config import is_run_config

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return "recipe"  # load_any_config reports it
    if is_run_config(data):
        return "run"
    return "evolve" if is_evolve_config(data) else "recipe"


def _parse_size(text: str) -> int:
    from darwinmerge.errors import ConfigError

    units = {
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
        "B": 1,
    }
    t = text.strip().upper()
    for unit in sorted(units, key=len, reverse=True):
        if t.endswith(unit):
            try:
                return int(float(t[: -len(unit)]) * units[unit])
            except ValueError:
                break
    if t.isdigit():
        return int(t)
    raise ConfigError(f"--shard-size {text!r}: expected a size like 5GB, 500MB or 1048576")


def register(app: typer.Typer) -> None:
    app.command("merge")(merge)
    app.command("validate")(validate)

"""``darwin mri MODEL --out DIR`` and ``darwin mri compare A B --out DIR``: scan one model
or a parent pair, save the scans (JSON + npz) and an HTML report, with progress bars."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from darwinmerge.errors import ConfigError, OutputExistsError

__all__ = ["register", "mri_command"]


@contextmanager
def _progress() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:

        def factory(description: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(description, total=total)
            return lambda n: bar.advance(task, n)

        yield factory


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out}: exists and is not empty; pass --force to overwrite")


def _print_scan(console: Any, name: str, scan: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{name}: {scan.family}, {scan.num_layers} layers")
    table.add_column("category")
    table.add_column(f"loss ({scan.loss_tokens} tokens)", justify="right")
    table.add_column("most important layer (BI)", justify="right")
    for c, cat in enumerate(scan.categories):
        top = int(scan.bi[c].argmax())
        table.add_row(cat, f"{scan.loss[c]:.3f}", f"L{top} ({scan.bi[c, top]:.3f})")
    console.print(table)
    if scan.is_moe:
        console.print(
            f"router entropy (mean) {scan.router_entropy.mean():.3f}; dead experts (mean "
            f"fraction) {scan.dead_fraction.mean():.3f}; worst layer "
            f"L{scan.sparse_layers[int(scan.dead_fraction.argmax())]} "
            f"{scan.dead_fraction.max():.2f}; absolute (< {scan.dead_abs_threshold:g} of "
            f"tokens) {scan.dead_fraction_abs.mean():.3f}"
        )


def mri_command(
    args: Annotated[
        list[str],
        typer.Argument(
            metavar="MODEL | compare A B", help="One model folder, or `compare` and two parents."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (scans + report.html).")],
    probes: Annotated[
        list[str] | None,
        typer.Option(
            "--probes",
            "-p",
            help="Probe set: builtin | zoo | zoo@ZOO_DIR | a .jsonl/.txt file | FILE:CATEGORY; "
            "repeatable (default builtin).",
        ),
    ] = None,
    base: Annotated[
        Path | None, typer.Option(help="Common base model (compare: task vectors).")
    ] = None,
    tokenizer: str | None = typer.Option(None, help="Tokenizer folder (default: the model's)."),
    max_length: int = typer.Option(128, help="Tokens per probe (longer ones are cut)."),
    batch_size: int = typer.Option(16, help="Probes per forward pass."),
    dead_threshold: float = typer.Option(0.05, help="Dead: utilisation below this x fair share."),
    dead_abs_threshold: float = typer.Option(
        0.05,
        help="Also reported: dead when below this share of all tokens.",
    ),
    loss_tokens: str = typer.Option(
        "completion",
        "--loss-tokens",
        "--loss",
        help="Probe / swap loss over: completion (tokens after each probe's prompt) | all.",
    ),
    swap_budget_mib: float = typer.Option(
        1024.0,
        help="compare: most MiB of layer inputs the swap scan keeps at once.",
    ),
    bootstrap_resamples: int = typer.Option(
        1000,
        "--bootstrap-resamples",
        "--bootstrap",
        help="Bootstrap resamples for the dead-expert interval.",
    ),
    bootstrap_seed: int = typer.Option(0, "--bootstrap-seed", "--seed", help="Bootstrap seed."),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N"),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16"),
    swap: bool = typer.Option(True, "--swap/--no-swap", help="compare: run the layer-swap scan."),
    swap_components: bool = typer.Option(
        True,
        "--swap-components/--no-swap-components",
        help="compare: also swap each layer's attention alone and its FFN alone.",
    ),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out."),
) -> None:
    """Model MRI: probe-wise layer importance, MoE health, parent comparison."""
    from rich.console import Console

    from darwinmerge.cli.fields import from_flags
    from darwinmerge.mri import compare_models, scan_model
    from darwinmerge.mri.config import MriConfig
    from darwinmerge.report import mri_section, write_report

    probes = probes or ["builtin"]
    cfg = from_flags(MriConfig, locals(), probes=tuple(probes))
    console = Console()
    if args[0] == "compare":
        if len(args) != 3:
            raise ConfigError("usage: darwin mri compare A B --out DIR (two model folders)")
        _check_out(out, force)
        with _progress() as progress:
            result = compare_models(args[1], args[2], cfg, base=base, progress=progress)
        out.mkdir(parents=True, exist_ok=True)  # only now: a failed scan leaves no folder
        result.save(out)
        _print_scan(console, "A", result.scan_a)
        _print_scan(console, "B", result.scan_b)
        c = result.comparison
        if cfg.swap:
            rho = ", ".join(
                f"{cat} {r:+.2f}" for cat, r in zip(c.categories, c.agreement_spearman, strict=True)
            )
            console.print(
                f"advantage map vs swap scan ({c.loss_tokens} loss): sign agreement "
                f"{c.agreement_sign:.2f}; Spearman per category: {rho}"
            )
            for line in _part_lines(c):
                console.print(line)
        sections = [mri_section({"A": result.scan_a, "B": result.scan_b}, c, result.weights)]
        meta = {
            "A": args[1],
            "B": args[2],
            "base": base or "-",
            "probes": ", ".join(probes),
            "loss": cfg.loss_tokens,
        }
    else:
        if len(args) != 1:
            raise ConfigError("give one model folder, or `compare A B`")
        if base is not None:
            raise ConfigError("--base only applies to `darwin mri compare A B`")
        _check_out(out, force)
        with _progress() as progress:
            scan = scan_model(args[0], cfg, progress=progress)
        out.mkdir(parents=True, exist_ok=True)
        scan.save(out)
        _print_scan(console, Path(args[0]).name, scan)
        sections = [mri_section({Path(args[0]).name: scan})]
        meta = {"model": args[0], "probes": ", ".join(probes), "loss": cfg.loss_tokens}
    report = write_report(out / "report.html", "darwinmerge - Model MRI", sections, meta=meta)
    console.print(f"wrote {out} (report: {report})")


def _part_lines(c: Any) -> list[str]:
    """One line per component swapped alone: its swap advantage summed over layers, per
    category, next to the whole layer's (positive: A's is the better one)."""
    import numpy as np

    out = []
    whole = np.nansum(c.swap_advantage, axis=1)
    for part in ("attention", "ffn"):
        swaps = c.part_swaps(part)
        if swaps is None:
            continue
        adv = np.nansum((swaps[0] - swaps[1]) / 2, axis=1)
        cells = ", ".join(
            f"{cat} {a:+.3f} (layer {w:+.3f})"
            for cat, a, w in zip(c.categories, adv, whole, strict=True)
        )
        out.append(f"{part} swapped alone, advantage of A summed over layers: {cells}")
    return out


def register(app: typer.Typer) -> None:
    app.command("mri")(mri_command)

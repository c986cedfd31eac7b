"""``darwin inspect MODEL``: family, layers, experts, layout, and where the parameters are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["register", "inspect_command"]


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _fmt_params(n: int) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _layer_pattern(layer_types: list[str]) -> str:
    """Run-length description, e.g. ``3x linear_attention, 1x full_attention (x10)``."""
    runs: list[tuple[str, int]] = []
    for t in layer_types:
        if runs and runs[-1][0] == t:
            runs[-1] = (t, runs[-1][1] + 1)
        else:
            runs.append((t, 1))
    for period in range(1, len(runs) + 1):
        if len(runs) % period == 0 and runs == runs[:period] * (len(runs) // period):
            body = ", ".join(f"{n}x {t}" for t, n in runs[:period])
            reps = len(runs) // period
            return body + (f" (repeated {reps}x)" if reps > 1 else "")
    return ", ".join(
        f"{n}x {t}" for t, n in runs
    )  # pragma: no cover - period len(runs) always matches


def _render(console: Any, path: Path, s: Any, show_tensors: bool) -> None:
    from rich.table import Table

    head = Table(title=f"{path}", show_header=False)
    head.add_column("field", style="bold")
    head.add_column("value")
    rows = [
        ("family", s.family),
        ("model_type", s.model_type),
        ("layers", f"{s.num_layers}: {_layer_pattern(s.layer_types)}"),
        ("hidden / vocab", f"{s.hidden_size} / {s.vocab_size}"),
    ]
    if s.num_experts is not None:
        rows.append(("experts", f"{s.num_experts}, top-k {s.top_k}, layout {s.expert_layout}"))
    rows += [
        ("prefix", s.prefix),
        ("multimodal / mtp", f"{s.multimodal} / {s.has_mtp}"),
        (
            "total",
            f"{s.total_tensors} tensors, {_fmt_params(s.total_params)} params, "
            f"{_fmt_bytes(s.total_bytes)}",
        ),
    ]
    if s.unknown:
        more = f" (+{len(s.unknown) - 3} more)" if len(s.unknown) > 3 else ""
        rows.append(("unknown tensors", ", ".join(s.unknown[:3]) + more))
    for k, v in rows:
        head.add_row(k, str(v))
    console.print(head)

    comp = Table(title="components")
    for col in ("component", "tensors", "params", "bytes", "share"):
        comp.add_column(col, justify="left" if col == "component" else "right")
    for c in s.components:
        share = c.params / s.total_params if s.total_params else 0.0
        comp.add_row(
            c.component, str(c.tensors), _fmt_params(c.params), _fmt_bytes(c.bytes), f"{share:.1%}"
        )
    console.print(comp)

    layers = Table(title="layers")
    for col in ("layer", "type", "mlp", "tensors", "params", "bytes"):
        layers.add_column(
            col, justify="right" if col in ("layer", "tensors", "params", "bytes") else "left"
        )
    for r in s.layers:
        layers.add_row(
            str(r.layer),
            r.layer_type,
            r.mlp,
            str(r.tensors),
            _fmt_params(r.params),
            _fmt_bytes(r.bytes),
        )
    console.print(layers)

    if show_tensors:
        tensors = Table(title="tensors")
        for col in ("name", "shape", "component", "layer", "expert", "proj", "pieces", "canonical"):
            tensors.add_column(col)
        for t in s.tensors:
            tensors.add_row(
                t.name,
                "x".join(map(str, t.shape)),
                t.component,
                "" if t.layer is None else str(t.layer),
                "" if t.expert is None else str(t.expert),
                t.proj or "",
                str(t.pieces),
                t.canonical if t.canonical != t.name else "=",
            )
        console.print(tensors)


def inspect_command(
    model: Annotated[Path, typer.Argument(help="Model folder (config.json + safetensors).")],
    tensors: Annotated[
        bool, typer.Option("--tensors", help="List every tensor with its role.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON instead of tables.")
    ] = False,
) -> None:
    """Show a checkpoint's family, layers, experts and where its parameters are."""
    from rich.console import Console

    from darwinmerge.arch import detect_architecture, summarize
    from darwinmerge.checkpoint import CheckpointReader

    reader = CheckpointReader(model)
    try:
        keys = reader.keys()
        arch = detect_architecture(reader.config, keys, {k: reader.shape(k) for k in keys})
        summary = summarize(arch, {k: reader.nbytes(k) for k in keys}, with_tensors=tensors)
    finally:
        reader.close()
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
        return
    _render(Console(width=200), reader.path, summary, tensors)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_command)

"""``darwin demo``: the main job on built-in tiny parents, on a CPU.

Today: builds two tiny parents in the seed's architecture (father: multimodal checkpoint
with fused experts and MTP tensors; mother: text-only, per-expert keys), merges them with
the seed's three-block recipe (per-block t, router source per block, one expert
transplant) and checks that the child loads in transformers and generates.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Working folder of the demo."),
    force: bool = typer.Option(True, "--force/--no-force", help="Rebuild outputs that exist."),
) -> None:
    """Run the whole chain on built-in tiny parents (CPU, a minute or so)."""
    import torch
    from transformers import AutoModelForCausalLM

    from darwinmerge.merge import Recipe, merge_to_disk
    from darwinmerge.zoo.tiny import make_parent_pair

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]darwin demo: tiny qwen3_5_moe parents")
    parents_dir = out / "parents"
    if parents_dir.exists() and force:
        import shutil

        shutil.rmtree(parents_dir)
    father, mother = make_parent_pair(
        "qwen3_5_moe", parents_dir, multimodal_a=True, layout_a="fused", mtp_a=True
    )
    console.print(f"father: {father} (multimodal, fused experts, MTP)")
    console.print(f"mother: {mother} (text-only, per-expert keys)")

    recipe = Recipe.parse({
        "parents": [{"name": "father", "path": str(father)}, {"name": "mother", "path": str(mother)}],
        "method": "slerp",
        "parameters": {"t": [
            {"layers": [0, 1], "value": 0.599},
            {"layers": [2, 2], "value": 0.9},
            {"layers": [3, 3], "value": 0.534},
            {"value": 0.5},
        ]},
        "router": [{"layers": [0, 2], "source": "mother"}, {"layers": [3, 3], "source": "father"}],
        "transplants": [{"layer": 1, "expert": 0, "source": "father"}],
        "donor": "father",
    })
    child = out / "child"
    res = merge_to_disk(recipe, child, force=force)
    table = Table(title="merge")
    table.add_column("what")
    table.add_column("value")
    table.add_row("tensors written", str(res.tensors))
    table.add_row("MiB", f"{res.bytes_written / 2**20:.2f}")
    table.add_row("seconds", f"{res.seconds:.2f}")
    for note in res.notes:
        table.add_row("note", note)
    console.print(table)

    model = AutoModelForCausalLM.from_pretrained(child, dtype=torch.float32)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        logits = model(ids).logits
    console.print(f"child loads as {type(model).__name__}; logits finite: "
                  f"{bool(torch.isfinite(logits).all())}; recipe: {child / 'darwin_recipe.yaml'}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

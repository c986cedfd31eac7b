"""Evaluation speed: items/s of greedy generative scoring, unbatched vs batched.

With ``--zoo DIR`` (a folder written by ``darwin zoo build``) it times DIR/father on the
zoo's test split. Without it, a random tiny model from darwinmerge.zoo.tiny (``--family``:
llama via ``tiny_model``, or qwen3_5_moe / qwen3_moe via ``build_tiny_model``) with
the tiny byte-level tokenizer runs the zoo's items when the zoo task source is
available, else synthetic arithmetic prompts. Random models never write an ANSWER line,
so every item generates ``--max-new-tokens`` tokens: a worst case per item.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_speed.py [--zoo DIR] [--n 64]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from darwinmerge.evaluate import TASK_SOURCES, TaskItem, TransformersBackend, evaluate, load_tasks
from darwinmerge.zoo.tiny import tiny_model, tiny_tokenizer


def _zoo_items(spec: str) -> list[TaskItem] | None:
    if "zoo" not in TASK_SOURCES:
        return None
    return load_tasks(spec, split="test")


def _synthetic(n: int) -> list[TaskItem]:
    return [
        TaskItem(
            f"add{i}", "REASONING", f"Question: what is {i} + {2 * i + 3}?\nWork:", str(3 * i + 3)
        )
        for i in range(n)
    ]


def _model(args: argparse.Namespace) -> tuple[Any, Any, str]:
    if args.zoo:
        path = Path(args.zoo) / "father"
        return str(path), None, f"zoo father ({path})"
    tok = tiny_tokenizer()
    if args.family == "llama":
        return tiny_model(tok, seed=0), tok, "random tiny llama (hidden 32, 2 layers)"
    from darwinmerge.zoo.tiny import build_tiny_model

    model = build_tiny_model(args.family, seed=0, jitter=0.3, vocab_size=len(tok))
    return model, tok, f"random tiny {args.family} (darwinmerge.zoo.tiny)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", help="a built zoo folder (uses DIR/father and its test split)")
    parser.add_argument("--family", default="llama", choices=["llama", "qwen3_5_moe", "qwen3_moe"])
    parser.add_argument("--n", type=int, default=64, help="number of items")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)

    items = _zoo_items(f"zoo:{args.zoo}" if args.zoo else "zoo")
    source = "zoo test split" if items else "synthetic arithmetic"
    items = (items or _synthetic(args.n))[: args.n]
    model, tok, label = _model(args)
    backend = TransformersBackend(
        model, tok, device=args.device, max_new_tokens=args.max_new_tokens, batch_size=1
    )
    console = Console()
    table = Table(
        title=f"eval speed: {label}, {len(items)} items ({source}), "
        f"max_new_tokens {args.max_new_tokens}, 1 torch thread, {args.device}"
    )
    for col in ("batch size", "seconds", "items/s", "speed-up", "same results"):
        table.add_column(col, justify="right")
    evaluate(backend, items[:2])  # warm-up
    reference = None
    base_rate = None
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        backend.batch_size = bs
        start = time.perf_counter()
        result = evaluate(backend, items, chunk_size=max(64, bs))
        seconds = time.perf_counter() - start
        rate = len(items) / seconds
        preds = [it.prediction for it in result.items]
        reference = reference or preds
        base_rate = base_rate or rate
        table.add_row(
            str(bs),
            f"{seconds:.2f}",
            f"{rate:.1f}",
            f"{rate / base_rate:.1f}x",
            "yes" if preds == reference else "NO",
        )
    console.print(table)


if __name__ == "__main__":
    main()

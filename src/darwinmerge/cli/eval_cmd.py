"""``darwin eval MODEL... --tasks SPEC --split test``: score models per category with
95% intervals and, for two or more models, the paired comparison (first vs each other)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from darwinmerge.dtypes import DTYPE_NAMES, torch_dtype
from darwinmerge.errors import CheckpointError, ConfigError

__all__ = ["register", "eval_command"]


def _model_names(models: list[str]) -> list[str]:
    names: list[str] = []
    for model in models:
        base = Path(model).name or model
        name, k = base, 2
        while name in names:
            name, k = f"{base}#{k}", k + 1
        names.append(name)
    return names


def _limit_per_category(items: list[Any], limit: int | None) -> list[Any]:
    if limit is None:
        return items
    if limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    seen: dict[str, int] = {}
    kept = []
    for it in items:
        if seen.get(it.category, 0) < limit:
            kept.append(it)
            seen[it.category] = seen.get(it.category, 0) + 1
    return kept


def _fmt(x: float) -> str:
    return "nan" if x != x else f"{x:.3f}"


def _print_result(console: Any, name: str, result: Any) -> None:
    from darwinmerge.cli.tables import narrow_table

    rows = [
        [cat, str(s.n), _fmt(s.score), f"[{_fmt(s.ci_low)}, {_fmt(s.ci_high)}]"]
        for cat, s in result.table().items()
    ]
    header = ["category", "n", "score", "95% CI"]
    caption = "overall = mean of categories"
    console.print(f"{name} ({result.scorer})")  # a long name wraps here, not in the table
    console.print(narrow_table(header, rows, caption=caption))


def _print_comparison(console: Any, comp: Any) -> None:
    """The paired table; its verdicts name A and B (the title says which model is which),
    so a long model name never widens the table past 80 columns."""
    from darwinmerge.cli.tables import narrow_table

    header = ["category", "A", "B", "A-B", "A only", "B only", "p", "verdict"]
    rows = [
        [
            cat,
            _fmt(r.score_a),
            _fmt(r.score_b),
            f"{r.diff:+.3f}",
            str(r.a_only),
            str(r.b_only),
            f"{r.p_value:.3g}",
            r.verdict,
        ]
        for cat, r in comp.rows.items()
    ]
    # the names on a line of their own: a long name wraps there, never inside the table
    console.print(f"paired: A = {comp.name_a}  vs  B = {comp.name_b}  (alpha {comp.alpha})")
    table = narrow_table(header, rows)
    table.columns[-1].justify = "left"
    console.print(table)


def eval_command(
    models: Annotated[list[str], typer.Argument(help="Model folders (Hugging Face format).")],
    tasks: Annotated[
        str,
        typer.Option("--tasks", "-t", help="zoo | jsonl:PATH | PATH | lmeval:TASK[@INCLUDE_PATH]"),
    ] = "zoo",
    split: Annotated[str, typer.Option(help="test | fitness | all")] = "test",
    test_fraction: Annotated[
        float, typer.Option(help="Share of item ids in the test split.")
    ] = 0.5,
    scorer: Annotated[
        str, typer.Option(help="auto (mc_loglik for items with choices) | exact_match | mc_loglik")
    ] = "auto",
    answer_regex: Annotated[
        str | None,
        typer.Option(help="Answer regex (group 'answer' or 1); default: last 'ANSWER: X' line."),
    ] = None,
    backend: Annotated[str, typer.Option(help="transformers | vllm")] = "transformers",
    batch_size: Annotated[int, typer.Option(help="Prompts per forward pass.")] = 16,
    max_new_tokens: Annotated[int, typer.Option(help="Generation length limit.")] = 32,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
    tokenizer: Annotated[
        str | None,
        typer.Option(help="Tokenizer folder or hub name (default: each model's own)."),
    ] = None,
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16 | float16")] = "float32",
    limit: Annotated[int | None, typer.Option(help="Keep the first N items per category.")] = None,
    alpha: Annotated[float, typer.Option(help="Significance level of the paired verdicts.")] = 0.05,
    out: Annotated[Path | None, typer.Option(help="Write results JSON here (atomic).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Score models per category with 95% intervals; compare the first with the others."""
    from rich.console import Console

    from darwinmerge.evaluate import (
        ExactMatch,
        compare,
        evaluate,
        load_tasks,
        make_backend,
        results_payload,
        write_json_atomic,
    )

    if dtype not in DTYPE_NAMES:
        raise ConfigError(f"--dtype {dtype!r} is not one of {', '.join(DTYPE_NAMES)}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"--alpha must be in (0, 1), got {alpha}")
    if out is not None and out.exists() and not force:
        from darwinmerge.errors import OutputExistsError

        raise OutputExistsError(f"{out}: already exists; pass --force to overwrite")
    if split not in ("test", "fitness", "all"):
        raise ConfigError(f"--split {split!r} is not one of test, fitness, all")
    if backend == "transformers":
        for model in models:
            if not (Path(model) / "config.json").is_file():
                raise CheckpointError(f"{model}: not a model folder (no config.json)")
    items = load_tasks(tasks, split=split, test_fraction=test_fraction)
    items = _limit_per_category(items, limit)
    if answer_regex is not None:
        if scorer == "mc_loglik":
            raise ConfigError("--answer-regex applies to exact_match, not mc_loglik")
        if any(it.choices for it in items):
            raise ConfigError("--answer-regex needs generative items; these have choices")
        scorer_obj: Any = ExactMatch(pattern=answer_regex)
    else:
        scorer_obj = scorer
    console = Console()
    names = _model_names(models)
    results = {}
    for name, model in zip(names, models, strict=True):
        runner = make_backend(
            backend,
            model,
            tokenizer,
            device=device,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            dtype=torch_dtype(dtype),
        )
        results[name] = evaluate(runner, items, scorer=scorer_obj, progress=True)
        del runner
        _print_result(console, name, results[name])
    comparisons = [
        compare(results[names[0]], results[other], name_a=names[0], name_b=other, alpha=alpha)
        for other in names[1:]
    ]
    for comp in comparisons:
        _print_comparison(console, comp)
    if out is not None:
        meta = {
            "tasks": tasks,
            "split": split,
            "test_fraction": test_fraction,
            "scorer": scorer if answer_regex is None else f"exact_match({answer_regex})",
            "limit_per_category": limit,
            "overall": "macro average of category accuracies",
            "interval": "95% Wilson per category; normal approximation for overall",
            "models": dict(zip(names, models, strict=True)),
        }
        write_json_atomic(out, results_payload(results, comparisons, meta), force=force)
        console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)

"""Which continuous score ranks a search's candidates as greedy exact match ranks them on
test? Every no-generation score, on the fitness split, against the test accuracy that a
finished ``search_suite.py`` run recorded for its candidates.

    python benchmarks/score_agreement.py --zoo runs/zoo --suite runs/suite --runs runs/ss9
    python benchmarks/score_agreement.py --zoo Z --suite S --runs R   # after search_suite --small

Per problem of the run (``--runs``, a ``search_suite.py`` output folder): the candidates
whose test exact match its row holds (parents ``a`` and ``b``, the 50/50 linear merge,
every searched arm's returned child at every budget, and the rank check's candidates
spread over the fitness range). Each is merged in memory once and scored on the whole
fitness split with one teacher-forced forward pass per item (``gold_margins``: the gold
continuation's summed log-probability ``L`` and its greedy margin ``m``), giving per item:

* ``gold_prob``: ``exp(L)``; ``gold_logprob``: ``L``;
* ``greedy``: ``m > 0`` (greedy decoding writes the gold continuation: exact match of the
  worked answer, 0 or 1);
* ``gold_margin@t``: ``sigmoid(m / t)`` for each temperature ``t`` (``darwinmerge``'s
  ``gold_margin`` uses 1).

Per score: the Spearman rank correlation across candidates between the macro fitness and
the recorded test accuracy, and the split-half reliability (the mean Spearman between
the candidates' fitness on two random halves of the items, ``--halves`` splits; 1 is
noiseless). The test split is only read back from the run's rows, never scored here.

Outputs: a markdown table (stdout) and ``--out`` JSON (every number).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

TEMPERATURES = (0.25, 0.5, 1.0, 2.0)


def candidates(row: dict[str, Any], work: Path, linear: str) -> dict[str, float]:
    """(recipe YAML or ``parent:NAME``) -> test accuracy, from a search-suite row and its
    arms' ``evolution.json`` files in ``work`` (the problem's folder)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from search_suite import rank_picks

    out = {"parent:a": row["a"], "parent:b": row["b"], linear: row["linear"]}
    for arm, data in row["arms"].items():
        for run in data.get("runs", []):
            evo = work / f"{arm}-{run['seed']}" / "evolution.json"
            if "trial" not in run or not evo.is_file():
                continue
            by_number = {r["number"]: r for r in json.loads(evo.read_text())["trials"]}
            for k, number in run["trial"].items():
                out[by_number[number]["recipe"]] = run["test"][k]
    rc = row.get("rank_check")
    if rc:
        # the same picks search_suite.rank_check made: evenly spaced in fitness rank
        recs = json.loads((work / f"{rc['arm']}-0" / "evolution.json").read_text())["trials"]
        picks = rank_picks(recs, rc["n"])
        if [p["values"][0] for p in picks] == rc["fitness"]:
            for p, t in zip(picks, rc["test"], strict=True):
                out[p["recipe"]] = t
    return out


def item_scores(ll: Any, m: Any) -> dict[str, Any]:
    """Per-item values of every score from the items' (log-likelihood, margin) arrays."""
    import numpy as np

    ll, m = np.asarray(ll, dtype=float), np.asarray(m, dtype=float)
    out = {"gold_prob": np.exp(ll), "gold_logprob": ll, "greedy": (m > 0).astype(float)}
    for t in TEMPERATURES:
        out[f"gold_margin@{t:g}"] = 1.0 / (1.0 + np.exp(-np.clip(m / t, -700, 700)))
    return out


def macro(values: Any, cats: list[str], keep: Any = None) -> Any:
    """[candidates] macro mean over categories of [candidates, items] values (items where
    ``keep`` is True)."""
    import numpy as np

    cats_a = np.asarray(cats)
    keep = np.ones(len(cats), bool) if keep is None else np.asarray(keep)
    cols = [keep & (cats_a == c) for c in sorted(set(cats))]
    means = [values[:, c].mean(1) for c in cols if c.any()]
    return np.mean(means, axis=0) if means else np.full(len(values), np.nan)


def agreement(
    values: Any, cats: list[str], test: list[float], halves: int, seed: int
) -> dict[str, float]:
    """Spearman of the macro fitness with test; split-half reliability over items."""
    import numpy as np

    from darwinmerge.mri.compare import spearman

    rng = np.random.default_rng(seed)
    rel = []
    for _ in range(halves):
        half = rng.random(len(cats)) < 0.5
        one, two = macro(values, cats, half), macro(values, cats, ~half)
        if np.isfinite(one).all() and np.isfinite(two).all():  # both halves hold items
            rel.append(spearman(one, two))
    fit = macro(values, cats)
    return {
        "spearman": float(spearman(fit, np.asarray(test, dtype=float))),
        "reliability": float(np.nanmean(rel)) if rel else math.nan,
    }


def run_problem(args: argparse.Namespace, name: str, fit_items: list[Any]) -> dict[str, Any]:
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import search_suite as ss

    from darwinmerge.zoo.problems import problem_parents

    work = args.runs / name
    row = json.loads((work / "row.json").read_text())["row"]
    paths = problem_parents(args.suite, name)
    cands = candidates(row, work, ss.linear_yaml(paths))
    cats = [it.category for it in fit_items]
    # the suite's own judge worker (both parents resident), used here for forward passes
    judge_args = argparse.Namespace(batch_size=args.batch_size, max_new_tokens=32)
    worker = ss.Judge(paths, fit_items, judge_args).worker
    requests = [(it.prompt, it.gold) for it in fit_items]
    per: dict[str, list[Any]] = {}
    for which in cands:
        if which.startswith("parent:"):
            worker.evaluate_model(which, fit_items[:1])  # writes the parent into the child
        else:
            worker.merged(which)
        pairs = worker.backend.gold_margins(requests)
        ll, m = zip(*pairs, strict=True)
        for score, v in item_scores(ll, m).items():
            per.setdefault(score, []).append(v)
    worker.close()
    test = list(cands.values())
    scores = {s: agreement(np.array(v), cats, test, args.halves, args.seed) for s, v in per.items()}
    return {"problem": name, "candidates": len(cands), "test": test, "scores": scores}


def markdown(rows: list[dict[str, Any]]) -> str:
    names = list(rows[0]["scores"])
    lines = [
        "Spearman with test exact match / split-half reliability, per score:",
        "",
        "| problem | candidates | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for r in rows:
        cells = [
            f"{r['scores'][s]['spearman']:+.2f} / {r['scores'][s]['reliability']:.2f}"
            for s in names
        ]
        lines.append(f"| {r['problem']} | {r['candidates']} | " + " | ".join(cells) + " |")
    worst = [min(r["scores"][s]["spearman"] for r in rows) for s in names]
    lines.append("| worst | | " + " | ".join(f"{w:+.2f}" for w in worst) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", type=Path, default=Path("runs/zoo"))
    p.add_argument("--suite", type=Path, default=Path("runs/suite"))
    p.add_argument("--runs", type=Path, required=True, help="a search_suite.py --out folder")
    p.add_argument("--problems", type=lambda s: s.split(","), default=None)
    p.add_argument("--halves", type=int, default=20, help="random half splits (reliability)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=None, help="JSON with every number")
    args = p.parse_args(argv)

    import darwinmerge.zoo.tasks  # noqa: F401  (registers the zoo task source)
    from darwinmerge.evaluate.tasks import load_tasks

    names = args.problems or sorted(
        d.name for d in args.runs.iterdir() if (d / "row.json").is_file()
    )
    if not names:
        p.error(f"{args.runs} holds no problem rows (row.json): run search_suite.py first")
    fit_items = load_tasks(f"zoo:{args.zoo}", split="fitness")
    rows = []
    for name in names:
        rows.append(run_problem(args, name, fit_items))
        print(f"{name}: {rows[-1]['candidates']} candidates", file=sys.stderr, flush=True)
    print(markdown(rows))
    if args.out is not None:
        args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Blind CMA-ES against MRI-guided CMA-ES on the demo zoo, same budget, several seeds.

    python benchmarks/evolve_efficiency.py --zoo runs/zoo --scans RUN/mri \\
        --trials 40 --seeds 5 --out evolve_efficiency.json

Blind: mean 0.5 and sigma 1/6 on every gene (mergekit-evolve's start). Guided: the prior
the genome modules derive from a ``darwin mri compare`` folder (built into
``--scans`` when missing). Both run ``darwin evolve``'s library function with the seed
genome space, the same fitness subset, the early-stop rule in audit mode (every item is
scored, the rule's decision is recorded, so both searches see full fitness values), and
honest selection on the test split.

Table 1 (per arm, median over seeds): evaluations to reach the blind run's final best
fitness (guided: the first trial whose best-so-far reaches it; blind: the trial that set
it), the winner's test score with its 95% interval, the paired test against the father,
items evaluated, items the stop rule would have saved and its false stops, and time per
candidate split into merge and evaluation. Table 2: the targets, met or not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

TARGETS = {
    "guided reaches blind's final best in <= 1/2 the evaluations (median)": None,
    "guided winner beats both parents on test, p < 0.05 vs father": None,
    "in-memory merge <= 10% of a candidate's time": None,
    "early stopping saves >= 30% of items, no false stop": None,
}


def _ensure_scans(zoo: Path, scans: Path) -> None:
    if (scans / "comparison.json").is_file():
        return
    from darwinmerge.mri.pipeline import MriConfig, compare_models

    print(f"building the MRI comparison into {scans} ...", file=sys.stderr)
    result = compare_models(zoo / "father", zoo / "mother", MriConfig())
    scans.mkdir(parents=True, exist_ok=True)
    result.save(scans)


def _config(args: argparse.Namespace, prior: dict[str, Any], seed: int) -> Any:
    from darwinmerge.evolve.config import EvolveConfig

    zoo = args.zoo.resolve()
    return EvolveConfig.model_validate(
        {
            "parents": {"father": str(zoo / "father"), "mother": str(zoo / "mother")},
            "tasks": f"zoo:{zoo}",
            "space": {"kind": args.space},
            "prior": prior,
            "optimizer": {"name": "cmaes", "seed": seed, "popsize": args.popsize},
            "trials": args.trials,
            # exact match: this benchmark measures the early-stop rule (0/1 items)
            "fitness": {"subset": args.subset, "chunk_size": args.chunk, "score": "accuracy"},
            "early_stop": {"enabled": True, "audit": True, "z": args.z},
            "backend": {"batch_size": args.batch_size, "max_new_tokens": 32},
            "select": {"top_k": args.top_k, "write_child": False},
        }
    )


def _run(args: argparse.Namespace, arm: str, seed: int) -> dict[str, Any]:
    from darwinmerge.evolve.api import evolve

    prior = (
        {"kind": "blind"}
        if arm == "blind"
        else {"kind": "mri", "scans": str(args.scans.resolve()), "target": args.target}
    )
    out = args.work / f"{arm}-{seed}"
    start = time.perf_counter()
    result = evolve(_config(args, prior, seed), out, force=True)
    record = json.loads((out / "evolution.json").read_text())
    rows = record["trials"]
    best, curve = -1.0, []
    for r in rows:
        v = r["values"][0] if r["state"] == "complete" and r["values"] else None
        best = max(best, v) if v is not None else best
        curve.append(best)
    sel = record["selection"]
    win = sel["candidates"][0]
    vs_father = win["vs"]["father"]["rows"]["overall"]
    vs_mother = win["vs"]["mother"]["rows"]["overall"]
    done = [r for r in rows if r["state"] != "fail"]
    merge = statistics.fmean(r["merge_seconds"] for r in done)
    evaluate = statistics.fmean(r["eval_seconds"] for r in done)
    es = record["early_stop"]
    sweep = rule_sweep(rows, _item_categories(args), args.chunk, [1.96, 2.576, 3.29])
    return {
        "rule_sweep": sweep,
        "arm": arm,
        "seed": seed,
        "curve": curve,
        "final_best": curve[-1],
        "winner": result.winner,
        "winner_genes": record["winner"]["genes"],
        "test": win["test"]["overall"],
        "father_test": sel["parents"]["father"]["overall"],
        "mother_test": sel["parents"]["mother"]["overall"],
        "vs_father": {"diff": vs_father["diff"], "p": vs_father["p_value"]},
        "vs_mother": {"diff": vs_mother["diff"], "p": vs_mother["p_value"]},
        "selection_gap": sel["selection_gap"],
        "items_used": es["items_used"],
        "items_saved": es["items_saved"],
        "items_saved_check": sum(
            r["items_planned"] - r["ucb_stop_at"] for r in rows if r.get("ucb_stop_at")
        ),
        "stops": es["stopped"],
        "false_stops": es["false_stops"],
        "merge_s": merge,
        "eval_s": evaluate,
        "seconds": time.perf_counter() - start,
    }


def _item_categories(args: argparse.Namespace) -> list[str]:
    """Categories of the fitness items in the order every candidate scores them."""
    from darwinmerge.evaluate.tasks import filter_split, load_tasks, stratified_subset

    every = load_tasks(f"zoo:{args.zoo.resolve()}", split=None)
    fitness = filter_split(every, "fitness", test_fraction=0.5)
    return [it.category for it in stratified_subset(fitness, args.subset, seed=0)]


def rule_sweep(
    rows: list[dict[str, Any]], cats: list[str], chunk: int, zs: list[float]
) -> dict[str, dict[str, Any]]:
    """Replay the early-stop rule at several ``z`` on an audited run's per-item results:
    items it would save, false stops (full fitness above the best known then), and
    whether the run's winner would have been stopped."""
    from darwinmerge.evolve.early_stop import EarlyStopRule

    categories = sorted(set(cats))
    planned = {c: cats.count(c) for c in categories}
    out = {}
    values = [r["values"][0] if r["state"] == "complete" and r["values"] else None for r in rows]
    winner = max((i for i, v in enumerate(values) if v is not None), key=lambda i: (values[i], -i))
    for z in zs:
        rule = EarlyStopRule(z=z, min_items=4)
        best: float | None = None
        saved = used = false = 0
        winner_stopped = False
        for i, r in enumerate(rows):
            bits = r.get("item_correct") or ""
            if len(bits) != len(cats) or values[i] is None:
                continue
            used += len(bits)
            counts: dict[str, list[int]] = {c: [0, 0] for c in categories}
            for done, (bit, c) in enumerate(zip(bits, cats, strict=True), start=1):
                counts[c][0] += bit == "1"
                counts[c][1] += 1
                if done % chunk or done == len(bits):
                    continue
                now = {c: (k, n) for c, (k, n) in counts.items()}
                if rule.should_stop(now, planned, categories, best):
                    saved += len(bits) - done
                    false += values[i] > best  # type: ignore[operator]
                    winner_stopped = winner_stopped or i == winner
                    break
            best = values[i] if best is None else max(best, values[i])  # type: ignore[type-var]
        out[f"{z:g}"] = {
            "saved_share": saved / used if used else 0.0,
            "false_stops": false,
            "winner_stopped": winner_stopped,
        }
    return out


def _first_reach(curve: list[float], level: float) -> int | None:
    for i, v in enumerate(curve):
        if v >= level - 1e-12:
            return i + 1
    return None


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    if len(known) < len(values):  # a run that never reached counts as "more than budget"
        known += [float("inf")] * (len(values) - len(known))
    return statistics.median(known) if known else None


def summarise(runs: list[dict[str, Any]], trials: int) -> dict[str, Any]:
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["arm"], r["seed"]): r for r in runs}
    rows: dict[str, dict[str, Any]] = {}
    for arm in ("blind", "guided"):
        reach = []
        for s in seeds:
            level = by[("blind", s)]["final_best"]
            reach.append(_first_reach(by[(arm, s)]["curve"], level))
        mine = [by[(arm, s)] for s in seeds]
        saved = sum(r["items_saved"] for r in mine)
        used = sum(r["items_used"] for r in mine)
        merge = statistics.fmean(r["merge_s"] for r in mine)
        ev = statistics.fmean(r["eval_s"] for r in mine)
        rows[arm] = {
            "evals_to_blind_final_best": reach,
            "median_evals": _median(reach),
            "final_best": [r["final_best"] for r in mine],
            "winner_test": [r["test"] for r in mine],
            "vs_father": [r["vs_father"] for r in mine],
            "vs_mother": [r["vs_mother"] for r in mine],
            "beats_both": [r["vs_father"]["diff"] > 0 and r["vs_mother"]["diff"] > 0 for r in mine],
            "significant_vs_father": [
                r["vs_father"]["diff"] > 0 and r["vs_father"]["p"] < 0.05 for r in mine
            ],
            "selection_gap": [r["selection_gap"] for r in mine],
            "items_used": used,
            "items_saved_by_stop_rule": saved,
            "saved_share": saved / used if used else 0.0,
            "false_stops": sum(r["false_stops"] for r in mine),
            "merge_s": merge,
            "eval_s": ev,
            "merge_share": merge / (merge + ev) if merge + ev else 0.0,
        }
    b, g = rows["blind"], rows["guided"]
    targets = {
        "guided reaches blind's final best in <= 1/2 the evaluations (median)": (
            g["median_evals"] is not None
            and b["median_evals"] is not None
            and g["median_evals"] <= 0.5 * b["median_evals"]
        ),
        "guided winner beats both parents on test, p < 0.05 vs father": all(
            x and y for x, y in zip(g["beats_both"], g["significant_vs_father"], strict=True)
        )
        and trials <= 40,
        "in-memory merge <= 10% of a candidate's time": max(b["merge_share"], g["merge_share"])
        <= 0.10,
        "early stopping saves >= 30% of items, no false stop": all(
            r["saved_share"] >= 0.30 and r["false_stops"] == 0 for r in (b, g)
        ),
    }
    return {"seeds": seeds, "trials": trials, "arms": rows, "targets": targets}


def _fmt_interval(s: dict[str, Any]) -> str:
    return f"{s['score']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def print_tables(summary: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    print(
        f"\nTable 1: blind vs MRI-guided CMA-ES, {summary['trials']} evaluations, "
        f"seeds {summary['seeds']}"
    )
    head = (
        f"{'arm':<7} {'evals to blind best (per seed)':<32} {'median':>6}  "
        f"{'winner test [95% CI] (per seed)':<40} {'p vs father':<26} "
        f"{'items':>7} {'saved':>6} {'false':>5} {'merge s':>8} {'eval s':>7} {'merge %':>7}"
    )
    print(head)
    print("-" * len(head))
    for arm, r in summary["arms"].items():
        reach = ",".join("-" if v is None else str(v) for v in r["evals_to_blind_final_best"])
        med = r["median_evals"]
        tests = "; ".join(_fmt_interval(t) for t in r["winner_test"])
        ps = ",".join(f"{v['p']:.2g}{'+' if v['diff'] > 0 else '-'}" for v in r["vs_father"])
        print(
            f"{arm:<7} {reach:<32} {('-' if med is None else f'{med:g}'):>6}  {tests:<40} "
            f"{ps:<26} {r['items_used']:>7} {r['saved_share']:>6.0%} {r['false_stops']:>5} "
            f"{r['merge_s']:>8.3f} {r['eval_s']:>7.3f} {r['merge_share']:>7.1%}"
        )
    parents = runs[0]
    print(
        f"parents on test: father {_fmt_interval(parents['father_test'])}, "
        f"mother {_fmt_interval(parents['mother_test'])}"
    )
    print(
        "\nEarly-stop rule replayed on the audited runs (saved share / false stops / "
        "winner stopped), per run:"
    )
    for r in runs:
        cells = "  ".join(
            f"z={z}: {v['saved_share']:.0%}/{v['false_stops']}/"
            f"{'yes' if v['winner_stopped'] else 'no'}"
            for z, v in r["rule_sweep"].items()
        )
        print(f"  {r['arm']:<6} seed {r['seed']}: {cells}")
    print("\nTable 2: targets")
    for name, ok in summary["targets"].items():
        print(f"  [{'met' if ok else 'NOT met'}] {name}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--zoo", type=Path, default=Path("runs/zoo"))
    p.add_argument("--scans", type=Path, default=Path("runs/zoo-mri"))
    p.add_argument("--work", type=Path, default=Path("runs/evolve-efficiency"))
    p.add_argument("--space", default="seed")
    p.add_argument("--target", default=None, help="MRI prior target category (default: all)")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--popsize", type=int, default=None)
    p.add_argument("--subset", type=int, default=60, help="fitness items per category")
    p.add_argument("--chunk", type=int, default=50)
    p.add_argument("--z", type=float, default=1.96)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=None, help="write both tables as JSON here")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if not (args.zoo / "zoo.json").is_file():
        print(f"{args.zoo}: no zoo; build it with `darwin zoo build`", file=sys.stderr)
        return 1
    _ensure_scans(args.zoo, args.scans)
    args.work.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in range(args.seeds):
        for arm in ("blind", "guided"):
            run = _run(args, arm, seed)
            print(
                f"{arm} seed {seed}: best {run['final_best']:.4f}, winner test "
                f"{_fmt_interval(run['test'])}, {run['seconds']:.0f} s",
                file=sys.stderr,
            )
            runs.append(run)
    summary = summarise(runs, args.trials)
    print_tables(summary, runs)
    if args.out is not None:
        args.out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Every search arm on every problem of the merge-problem suite, judged on held-out items.

    python benchmarks/search_suite.py --zoo runs/zoo --suite runs/suite --out runs/search_suite
    python benchmarks/search_suite.py --small --out /tmp/ss     # micro zoo + suite, seconds

Per problem (``darwinmerge.zoo.problems``): parents ``a`` and ``b`` (+ base) scored once on
the test split, with the 50/50 linear merge; the ceiling (the highest of: the macro
average of the parents' per-category best, the test score of a long search's winner on
the whole fitness split when ``--ceiling-trials`` asks for one, and the best test score
of any child this run scored, since each is reachable) and the headroom (ceiling minus
the best of a, b and linear).

Arms: ``prior`` (the MRI prior's own start child, zero evaluations), ``blind`` (CMA-ES from
mean 0.5 / sigma 1/6, mergekit-evolve's start), ``guided`` (CMA-ES from the MRI prior),
``trusted`` (CMA-ES from the MRI prior with ``trust: gene``: the prior blended with a free
genome by an evolved trust gene), ``random``, ``tpe`` and ``nsga2`` (a GA as Mergenetic
runs it; single objective here). Each arm runs ``max(budgets)`` evaluations per search seed
on the *fitness* split only (the tasks it is given hold no test item, so the search cannot
read the test split), then for every budget ``k`` the child the arm would return after
``k`` evaluations (the best fitness among its first ``k`` trials) is scored on the test
split. The metric is that test score: its median and a 95% interval across seeds, its gain
over the arm's own start (trial 0), and an exact paired test of winner against start pooled
over seeds.

Outputs in ``--out``: ``search_suite.json`` (every number), ``search_suite.md`` (the tables),
``curves_<problem>.png`` (anytime test curves per arm), and the work folders.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ARMS = ("prior", "blind", "guided", "trusted", "random", "tpe", "nsga2")
ESSENTIAL = ("prior", "blind", "guided")


# --------------------------------------------------------------------------- setup
def _suite(args: argparse.Namespace) -> tuple[Path, Path, dict[str, Any]]:
    from darwinmerge.zoo.build import ZooConfig, build_zoo, micro_config
    from darwinmerge.zoo.problems import SuiteConfig, build_suite, micro_suite_config

    zoo, suite = args.zoo.resolve(), args.suite.resolve()
    say = (lambda m: print(m, file=sys.stderr)) if args.verbose else None
    build_zoo(zoo, micro_config(args.seed) if args.small else ZooConfig(seed=args.seed), log=say)
    cfg = micro_suite_config() if args.small else SuiteConfig()
    only = tuple(args.problems) if args.problems else None
    manifest = build_suite(suite, zoo, cfg, only=only, log=say)
    return zoo, suite, manifest


def _fitness_tasks(zoo: Path, work: Path) -> tuple[str, list[Any]]:
    """A tasks folder with the fitness split only (what every arm searches on), and the
    test items (what every returned child is judged on)."""
    import darwinmerge.zoo.tasks  # noqa: F401  (registers the zoo task source)
    from darwinmerge.evaluate.tasks import load_tasks

    every = load_tasks(f"zoo:{zoo}", split=None)
    fit = load_tasks(f"zoo:{zoo}", split="fitness")
    folder = work / "fitness_tasks" / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    for cat in sorted({it.category for it in every}):
        rows = [json.dumps(it.to_dict(), sort_keys=True) for it in fit if it.category == cat]
        (folder / f"{cat}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return f"zoo:{folder}", load_tasks(f"zoo:{zoo}", split="test")


def _scans(zoo: Path, paths: dict[str, Path | None], work: Path) -> Path:
    from darwinmerge.mri.pipeline import MriConfig, compare_models

    folder = work / "mri"
    if not (folder / "comparison.json").is_file():
        cfg = MriConfig(probes=(f"zoo@{zoo}",))
        result = compare_models(paths["a"], paths["b"], cfg, base=paths["base"])  # type: ignore[arg-type]
        folder.mkdir(parents=True, exist_ok=True)
        result.save(folder)
    return folder


def _config(
    args: argparse.Namespace,
    paths: dict[str, Path | None],
    tasks: str,
    arm: str,
    seed: int,
    scans: Path,
    trials: int,
    subset: int | float,
) -> Any:
    from darwinmerge.evolve.config import EvolveConfig

    optimizer = {"guided": "cmaes", "blind": "cmaes", "trusted": "cmaes"}.get(arm, arm)
    prior: dict[str, Any] = {"kind": "blind"}
    if arm == "guided":
        prior = {"kind": "mri", "scans": str(scans)}
    if arm == "trusted":  # the MRI prior blended with a free genome by an evolved trust gene
        prior = {"kind": "mri", "scans": str(scans), "trust": "gene"}
    data: dict[str, Any] = {
        "parents": {"a": str(paths["a"]), "b": str(paths["b"])},
        "tasks": tasks,
        "space": {"kind": args.space, "max_blocks": args.max_blocks},
        "prior": prior,
        "optimizer": {"name": optimizer, "seed": seed, "start_first": args.start_first},
        "trials": trials,
        "fitness": {"subset": subset or 1.0, "chunk_size": args.race or 10_000},
        "early_stop": {"enabled": bool(args.race)},
        "backend": {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens},
        "select": {"top_k": 1, "write_child": False},
    }
    if paths["base"] is not None:
        data["base"] = str(paths["base"])
    data["fitness"].update(args.fitness_extra)
    return EvolveConfig.model_validate(data)


def start_yaml(cfg: Any) -> str:
    """The recipe of the arm's own start: its prior's mean genome, decoded."""
    import numpy as np

    from darwinmerge.evolve.api import space_and_prior
    from darwinmerge.evolve.optimizer import SearchBox

    space, prior = space_and_prior(cfg)
    names = [g.name if hasattr(g, "name") else str(g) for g in space.genes]
    box = SearchBox.from_prior(names, prior).narrowed(dict(cfg.bounds))
    return str(space.decode(np.asarray(box.mean, dtype=float)).to_yaml())


# --------------------------------------------------------------------------- scoring
class Judge:
    """Scores recipes (YAML) and parents on the test split, once each (cached by text)."""

    def __init__(self, paths: dict[str, Path | None], test_items: list[Any], args: Any) -> None:
        from darwinmerge.evaluate.tasks import TaskItem
        from darwinmerge.evolve.workers import CandidateWorker, WorkerSpec

        cats = tuple(sorted({it.category for it in test_items}))
        spec = WorkerSpec(
            parents=(("a", str(paths["a"])), ("b", str(paths["b"]))),
            base=str(paths["base"]) if paths["base"] is not None else None,
            items=(TaskItem(id="-", category="-", prompt="test", answer="-"),),
            categories=cats,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
        )
        self.worker = CandidateWorker(spec, "judge")
        self.items = test_items
        self.cache: dict[str, dict[str, Any]] = {}

    def score(self, which: str) -> dict[str, Any]:
        key = hashlib.sha256(which.encode()).hexdigest()[:16]
        if key not in self.cache:
            res = self.worker.evaluate_model(which, self.items)
            self.cache[key] = {
                "overall": res.overall.score,
                "categories": {c: s.score for c, s in res.categories.items()},
                "correct": {it.id: bool(it.correct) for it in res.items},
                "key": key,
            }
        return self.cache[key]


class Rescorer:
    """The honest final choice ``select.rescore_top`` makes, replayed on a finished run:
    the ``top`` best distinct candidates among the first ``k`` trials are scored again,
    with the search's own score, on fitness-split items the search never used (per
    category ``items``; the test split is not read), and the best by the pooled fitness
    (search and fresh items weighted by their counts) is returned."""

    def __init__(self, cfg: Any, top: int, items: int) -> None:
        from darwinmerge.evaluate.tasks import TaskItem, filter_split, fresh_subset, load_tasks
        from darwinmerge.evolve.api import fitness_score, fitness_subset, worker_spec
        from darwinmerge.evolve.workers import CandidateWorker

        fit = filter_split(load_tasks(cfg.tasks, split=None), "fitness")
        used = fitness_subset(cfg)
        self.fresh = fresh_subset(fit, used, items, seed=cfg.select.rescore_seed)
        self.score = fitness_score(cfg, used)
        cats = sorted({it.category for it in used})
        dummy = TaskItem(id="-", category="-", prompt="test", answer="-")
        self.worker = CandidateWorker(worker_spec(cfg, [dummy], cats, self.score), "rescore")
        self.top = top
        self.cache: dict[str, tuple[float, int]] = {}

    def fresh_fitness(self, recipe: str) -> tuple[float, int]:
        if recipe not in self.cache:
            self.cache[recipe] = self.worker.fitness(recipe, self.fresh)
        return self.cache[recipe]

    def pick(self, records: list[dict[str, Any]], k: int) -> dict[str, Any] | None:
        from darwinmerge.evolve.select import best_pooled

        pool = [
            r
            for r in records
            if r["number"] < k and r["state"] == "complete" and r["values"] and r["recipe"]
        ]
        ranked: list[dict[str, Any]] = []
        for r in sorted(pool, key=lambda r: (-r["values"][0], r["number"])):
            if all(r["recipe"] != q["recipe"] for q in ranked):
                ranked.append(r)
        top = ranked[: self.top]
        best, _ = best_pooled(
            [
                (r["values"][0], int(r.get("items_used") or r.get("items_planned") or 1))
                for r in top
            ],
            lambda rank: self.fresh_fitness(top[rank]["recipe"]),
        )
        return None if best is None else top[best]


def linear_yaml(paths: dict[str, Path | None]) -> str:
    import yaml

    return yaml.safe_dump(
        {
            "method": "linear",
            "parents": [
                {"name": "a", "path": str(paths["a"]), "parameters": {"weight": 0.5}},
                {"name": "b", "path": str(paths["b"]), "parameters": {"weight": 0.5}},
            ],
            "donor": "a",
        },
        sort_keys=False,
    )


def anytime(records: list[dict[str, Any]], budgets: list[int]) -> dict[int, dict[str, Any]]:
    """For each budget ``k``: the trial the arm would return after its first ``k`` trials
    (the best first objective among complete trials numbered below ``k``; ties go to the
    earlier trial)."""
    out: dict[int, dict[str, Any]] = {}
    for k in budgets:
        pool = [
            r
            for r in records
            if r["number"] < k and r["state"] == "complete" and r["values"] and r["recipe"]
        ]
        if pool:
            out[k] = min(pool, key=lambda r: (-r["values"][0], r["number"]))
    return out


def items_per_eval(records: list[dict[str, Any]], budget: int) -> float:
    """Fitness items scored per evaluation over the first ``budget`` trials (what the
    fitness cost: with ``--race`` a stopped candidate scores only part of the split;
    a genome answered from the cache costs nothing)."""
    used = [
        int(r.get("items_used") or 0)
        for r in records
        if r["number"] < budget and r["state"] != "fail" and r.get("cached_from") is None
    ]
    return statistics.fmean(used) if used else math.nan


def paired_p(wins: int, losses: int) -> float:
    from darwinmerge.evaluate.stats import mcnemar_exact

    return mcnemar_exact(wins, losses)


def interval(values: list[float]) -> tuple[float, float]:
    """95% t-interval of the mean across seeds (the spread of what a user would get)."""
    n = len(values)
    if n < 2:
        return (values[0], values[0]) if values else (math.nan, math.nan)
    tq = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}
    half = tq.get(n, 1.96) * statistics.stdev(values) / math.sqrt(n)
    mean = statistics.fmean(values)
    return (mean - half, mean + half)


# --------------------------------------------------------------------------- one problem
def settings_key(args: argparse.Namespace) -> str:
    """What a problem's row depends on besides the suite (a cached row with another key is
    recomputed; the arms' own evolution.json files are reused either way)."""
    keys: tuple[str, ...] = (
        "budgets",
        "seeds",
        "extra_seeds",
        "subset",
        "arms",
        "ceiling_trials",
        "space",
    )
    keys += ("max_blocks", "fitness_extra", "rank_sample", "batch_size", "max_new_tokens")
    keys += ("rescore_top", "rescore_items", "race", "start_first")
    data = {k: getattr(args, k, None) for k in keys}
    from darwinmerge.evolve.api import AUTO_SCORE

    data["auto_score"] = AUTO_SCORE  # what fitness.score: auto meant for this row
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def rank_picks(records: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` distinct complete trials (by recipe, the first in fitness order kept), evenly
    spaced in fitness rank, lowest first (all of them when there are fewer)."""
    import numpy as np

    done = [r for r in records if r["state"] == "complete" and r["values"] and r["recipe"]]
    unique: dict[str, dict[str, Any]] = {}
    for r in sorted(done, key=lambda r: r["values"][0]):
        unique.setdefault(r["recipe"], r)
    pool = list(unique.values())
    if not pool or n < 1:
        return []
    return [pool[i] for i in sorted({round(i) for i in np.linspace(0, len(pool) - 1, n)})]


def rank_check(records: list[dict[str, Any]], judge: Judge, n: int) -> dict[str, Any] | None:
    """Does the score the search optimizes agree with test accuracy across candidates?
    ``n`` trials of one search run, evenly spaced in fitness rank (so the sample spans the
    candidates the search visits, not only its top), scored on test; their Spearman rank
    correlation."""
    import numpy as np

    from darwinmerge.mri.compare import spearman

    picks = rank_picks(records, n)
    if n < 3 or len(picks) < 3:
        return None
    fit = np.array([r["values"][0] for r in picks], dtype=float)
    test = np.array([judge.score(r["recipe"])["overall"] for r in picks], dtype=float)
    return {
        "n": len(picks),
        "spearman": float(spearman(fit, test)),
        "fitness": fit.tolist(),
        "test": test.tolist(),
    }


def row_from_json(row: dict[str, Any]) -> dict[str, Any]:
    """A problem's row as read back from ``row.json``: JSON made its budget keys strings;
    the tables, targets and plots index them by the int budget, as in a fresh row."""
    out = dict(row)
    out["arms"] = {}
    for arm, s in row["arms"].items():
        s = dict(s)
        s["budgets"] = {int(k): v for k, v in s["budgets"].items()}
        s["runs"] = [
            {
                key: ({int(k): v for k, v in val.items()} if key in _BUDGET_KEYED else val)
                for key, val in run.items()
            }
            for run in s["runs"]
        ]
        out["arms"][arm] = s
    return out


_BUDGET_KEYED = ("test", "fitness", "trial")


def run_problem(
    args: argparse.Namespace, zoo: Path, suite: Path, name: str, hard: bool
) -> dict[str, Any]:
    from darwinmerge.evolve.api import evolve
    from darwinmerge.zoo.problems import problem_parents

    work = args.out / name
    work.mkdir(parents=True, exist_ok=True)
    cached = work / "row.json"
    key = settings_key(args)
    if cached.is_file():
        saved = json.loads(cached.read_text())
        if saved.get("settings") == key:
            return row_from_json(saved["row"])
    paths = problem_parents(suite, name)
    tasks, test_items = _fitness_tasks(zoo, args.out)
    scans = _scans(zoo, paths, work)
    judge = Judge(paths, test_items, args)
    t0 = time.perf_counter()
    ref = {
        "a": judge.score("parent:a"),
        "b": judge.score("parent:b"),
        "linear": judge.score(linear_yaml(paths)),
    }
    cats = sorted(ref["a"]["categories"])
    percat = statistics.fmean(
        max(ref["a"]["categories"][c], ref["b"]["categories"][c]) for c in cats
    )
    best_ref = max(r["overall"] for r in ref.values())
    long_search = None
    if args.ceiling_trials:
        cfg = _config(args, paths, tasks, "guided", 0, scans, args.ceiling_trials, 1.0)
        evolve(cfg, work / "ceiling", force=True)
        recs = json.loads((work / "ceiling" / "evolution.json").read_text())["trials"]
        top = anytime(recs, [args.ceiling_trials])[args.ceiling_trials]
        long_search = judge.score(top["recipe"])["overall"]
    ceiling = max(percat, long_search if long_search is not None else -1.0)
    row: dict[str, Any] = {
        "problem": name,
        "hard": hard,
        "a": ref["a"]["overall"],
        "b": ref["b"]["overall"],
        "linear": ref["linear"]["overall"],
        "percat_ceiling": percat,
        "long_search": long_search,
        "ceiling": ceiling,
        "headroom": ceiling - best_ref,
        "best_reference": best_ref,
        "categories": {name: r["categories"] for name, r in ref.items()},
        "arms": {},
    }
    budgets = sorted(args.budgets)
    top_budget = budgets[-1]
    rescorer = None
    if args.rescore_top > 1:
        first = _config(args, paths, tasks, "blind", 0, scans, top_budget, args.subset)
        rescorer = Rescorer(first, args.rescore_top, args.rescore_items)
    for arm in args.arms:
        if arm == "prior":
            # the MRI prior's own start child: no evaluation at all
            cfg = _config(args, paths, tasks, "guided", 0, scans, top_budget, args.subset)
            start = judge.score(start_yaml(cfg))
            runs = [{"seed": 0, "test": {k: start["overall"] for k in budgets}}]
            row["arms"][arm] = summarise_arm(runs, budgets)
            continue
        seeds = args.seeds if arm in ESSENTIAL else args.extra_seeds
        runs = []
        again: list[dict[str, Any]] = []  # the same runs, the final choice re-scored
        for seed in range(seeds):
            out = work / f"{arm}-{seed}"
            cfg = _config(args, paths, tasks, arm, seed, scans, top_budget, args.subset)
            if not (out / "evolution.json").exists():
                evolve(cfg, out, force=True)
            recs = json.loads((out / "evolution.json").read_text())["trials"]
            picks = anytime(recs, budgets)
            start = judge.score(start_yaml(cfg))
            tests = {k: judge.score(p["recipe"]) for k, p in picks.items()}
            final = tests[max(tests)]
            wins = sum(final["correct"][i] and not start["correct"][i] for i in start["correct"])
            losses = sum(start["correct"][i] and not final["correct"][i] for i in start["correct"])
            runs.append(
                {
                    "seed": seed,
                    "test": {k: t["overall"] for k, t in tests.items()},
                    "fitness": {k: p["values"][0] for k, p in picks.items()},
                    "trial": {k: p["number"] for k, p in picks.items()},
                    "start": start["overall"],
                    "wins": wins,
                    "losses": losses,
                    "items_per_eval": items_per_eval(recs, top_budget),
                }
            )
            if rescorer is not None:
                chosen: dict[int, dict[str, Any]] = {}
                for k in budgets:
                    pick = rescorer.pick(recs, k)
                    if pick is not None:
                        chosen[k] = pick
                rtests = {k: judge.score(c["recipe"]) for k, c in chosen.items()}
                rfinal = rtests[max(rtests)]
                again.append(
                    {
                        "seed": seed,
                        "test": {k: t["overall"] for k, t in rtests.items()},
                        "trial": {k: c["number"] for k, c in chosen.items()},
                        "start": start["overall"],
                        "wins": sum(
                            rfinal["correct"][i] and not start["correct"][i]
                            for i in start["correct"]
                        ),
                        "losses": sum(
                            start["correct"][i] and not rfinal["correct"][i]
                            for i in start["correct"]
                        ),
                    }
                )
        row["arms"][arm] = summarise_arm(runs, budgets)
        if again:
            row["arms"][f"{arm}+rescore"] = summarise_arm(again, budgets)
    # the fitness against test across candidates of one unguided run (random's, else
    # blind's): the spread a search sees, not only its winners
    row["rank_check"] = None
    for arm in ("random", "blind", "guided"):
        evo = work / f"{arm}-0" / "evolution.json"
        if arm in args.arms and evo.is_file():
            recs = json.loads(evo.read_text())["trials"]
            row["rank_check"] = rank_check(recs, judge, args.rank_sample)
            if row["rank_check"] is not None:
                row["rank_check"]["arm"] = arm
            break
    # every child scored above is a lower bound of what a long search can reach: the
    # ceiling is never below the best of them (a higher ceiling only makes the
    # "closes half the headroom" target harder)
    row["best_child"] = max(v["overall"] for v in judge.cache.values())
    row["ceiling"] = max(row["ceiling"], row["best_child"])
    row["headroom"] = row["ceiling"] - best_ref
    row["seconds"] = round(time.perf_counter() - t0, 1)
    row["load_end"] = os.getloadavg()[0]
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps({"settings": key, "row": row}, indent=2) + "\n")
    os.replace(tmp, cached)
    return row


def _problem_job(job: tuple[argparse.Namespace, Path, Path, str, bool]) -> dict[str, Any]:
    """One problem in a worker process (``--jobs``): one torch thread there too."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    print(f"problem {job[3]} ...", file=sys.stderr, flush=True)
    return run_problem(*job)


def summarise_arm(runs: list[dict[str, Any]], budgets: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": runs, "budgets": {}}
    for k in budgets:
        vals = [r["test"][k] for r in runs if k in r["test"]]
        if not vals:
            continue
        low, high = interval(vals)
        out["budgets"][k] = {"median": statistics.median(vals), "low": low, "high": high}
    searched = [r for r in runs if "start" in r]
    if searched:
        top = max(budgets)
        gains = [r["test"][top] - r["start"] for r in searched if top in r["test"]]
        wins = sum(r["wins"] for r in searched)
        losses = sum(r["losses"] for r in searched)
        out["gain_over_start"] = statistics.fmean(gains) if gains else math.nan
        out["pooled"] = {"wins": wins, "losses": losses, "p": paired_p(wins, losses)}
        cost = [r["items_per_eval"] for r in searched if "items_per_eval" in r]
        if cost:
            out["items_per_eval"] = statistics.fmean(cost)
    return out


# --------------------------------------------------------------------------- verdicts
def targets(rows: list[dict[str, Any]], budgets: list[int]) -> dict[str, Any]:
    top = max(budgets)
    ten = 10 if 10 in budgets else budgets[min(1, len(budgets) - 1)]

    def med(row: dict[str, Any], arm: str, k: int) -> float:
        return row["arms"].get(arm, {}).get("budgets", {}).get(k, {}).get("median", math.nan)

    open_rows = [r for r in rows if not r["hard"]]
    early = [med(r, "guided", ten) >= med(r, "blind", top) for r in open_rows]
    beats_start = [
        r["problem"]
        for r in rows
        if r["arms"].get("guided", {}).get("pooled", {}).get("p", 1.0) < 0.05
        and r["arms"]["guided"].get("gain_over_start", 0.0) > 0
    ]
    closes = [
        r["problem"]
        for r in rows
        if r["headroom"] > 0 and med(r, "guided", top) - r["best_reference"] >= r["headroom"] / 2
    ]
    never_below = [med(r, "guided", top) >= med(r, "blind", top) - 0.01 for r in rows]
    return {
        f"guided median at {ten} >= blind's at {top} on every problem with headroom": all(early)
        and bool(early),
        "the search's winner beats its start (pooled p < 0.05) on >= 4 problems": len(beats_start)
        >= 4,
        "the final child closes >= half the headroom on >= 4 problems": len(closes) >= 4,
        f"guided at {top} never below blind by more than 0.01": all(never_below),
        "_beats_start": beats_start,
        "_closes_half": closes,
    }


def markdown(rows: list[dict[str, Any]], budgets: list[int], verdicts: dict[str, Any]) -> str:
    lines = [
        "| problem | a | b | linear | ceiling (per-category best / long search / best child) "
        "| headroom |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        ls = f"{r['long_search']:.3f}" if r["long_search"] is not None else "-"
        tag = " (hard)" if r["hard"] else ""
        lines.append(
            f"| {r['problem']}{tag} | {r['a']:.3f} | {r['b']:.3f} | {r['linear']:.3f} | "
            f"{r['ceiling']:.3f} ({r['percat_ceiling']:.3f} / {ls} / {r['best_child']:.3f}) | "
            f"{r['headroom']:+.3f} |"
        )
    lines += [
        "",
        "Test score of the child each arm returns (median over seeds [95% interval]):",
        "",
    ]
    head = "| problem | arm | " + " | ".join(f"{k} evals" for k in budgets)
    lines += [head + " | gain over start | winner vs start (pooled) | items / eval |"]
    lines += ["|---|---|" + "---:|" * len(budgets) + "---:|---|---:|"]
    for r in rows:
        for arm, s in r["arms"].items():
            cells = []
            for k in budgets:
                b = s["budgets"].get(k)
                cells.append(f"{b['median']:.3f} [{b['low']:.3f}, {b['high']:.3f}]" if b else "-")
            gain = s.get("gain_over_start")
            pooled = s.get("pooled")
            gain_cell = f"{gain:+.3f}" if gain is not None else "-"
            pooled_cell = (
                f"{pooled['wins']} won / {pooled['losses']} lost, p = {pooled['p']:.3g}"
                if pooled
                else "-"
            )
            cost = s.get("items_per_eval")
            cost_cell = f"{cost:.0f}" if cost is not None else "-"
            lines.append(
                f"| {r['problem']} | {arm} | {' | '.join(cells)} | {gain_cell} | {pooled_cell} "
                f"| {cost_cell} |"
            )
    checks = [r for r in rows if r.get("rank_check")]
    if checks:
        lines += [
            "",
            "Fitness against test across one run's candidates (evenly spaced in fitness rank):",
            "",
            "| problem | run | candidates | Spearman | test range |",
            "|---|---|---:|---:|---|",
        ]
        for r in checks:
            c = r["rank_check"]
            lines.append(
                f"| {r['problem']} | {c['arm']}-0 | {c['n']} | {c['spearman']:+.2f} | "
                f"{min(c['test']):.3f}-{max(c['test']):.3f} |"
            )
    lines += ["", "| target | met |", "|---|---|"]
    for name, ok in verdicts.items():
        if not name.startswith("_"):
            lines.append(f"| {name} | {'met' if ok else 'NOT met'} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], budgets: list[int], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for r in rows:
        fig, ax = plt.subplots(figsize=(6, 4))
        for arm, s in r["arms"].items():
            ks = [k for k in budgets if k in s["budgets"]]
            med = [s["budgets"][k]["median"] for k in ks]
            lo = [s["budgets"][k]["low"] for k in ks]
            hi = [s["budgets"][k]["high"] for k in ks]
            ax.plot(ks, med, marker="o", label=arm)
            ax.fill_between(ks, lo, hi, alpha=0.15)
        for ref, style in (("a", ":"), ("b", "--"), ("linear", "-.")):
            ax.axhline(r[ref], color="grey", linestyle=style, linewidth=1, label=ref)
        ax.axhline(r["ceiling"], color="black", linewidth=1, label="ceiling")
        ax.set_xscale("log")
        ax.set_xticks(budgets)
        ax.set_xticklabels([str(k) for k in budgets])
        ax.set_xlabel("evaluations")
        ax.set_ylabel("test score of the returned child")
        ax.set_title(r["problem"])
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / f"curves_{r['problem']}.png", dpi=100)
        plt.close(fig)


# --------------------------------------------------------------------------- main
class LoadSampler:
    """The machine's 1-minute load average, sampled in a daemon thread during the run."""

    def __init__(self, every: int = 30) -> None:
        import threading

        self.every = every
        self.samples = [os.getloadavg()[0]]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> dict[str, Any]:
        self._done.set()
        self.samples.append(os.getloadavg()[0])
        return {
            "mean": statistics.fmean(self.samples),
            "max": max(self.samples),
            "every": self.every,
            "samples": len(self.samples),
        }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--zoo", type=Path, default=Path("runs/zoo"))
    p.add_argument("--suite", type=Path, default=Path("runs/suite"))
    p.add_argument("--out", type=Path, default=Path("runs/search_suite"))
    p.add_argument("--seed", type=int, default=0, help="zoo seed (the suite is built from it)")
    p.add_argument("--problems", type=lambda s: s.split(","), default=None)
    p.add_argument("--arms", type=lambda s: s.split(","), default=list(ARMS))
    p.add_argument(
        "--budgets", type=lambda s: [int(x) for x in s.split(",")], default=[5, 10, 20, 40]
    )
    p.add_argument("--seeds", type=int, default=5, help="search seeds of prior/blind/guided")
    p.add_argument("--extra-seeds", type=int, default=2, help="search seeds of the other arms")
    p.add_argument(
        "--subset", type=int, default=20, help="fitness items per category (0: the whole split)"
    )
    p.add_argument(
        "--race",
        type=int,
        default=0,
        help="race every candidate against the best so far, paired, in chunks of this many "
        "items (the early-stop rule; 0: off, every candidate scores every item)",
    )
    p.add_argument(
        "--start-first",
        dest="start_first",
        action="store_true",
        help="every searched arm's first trial is its own start (optimizer.start_first, "
        "the default)",
    )
    p.add_argument(
        "--no-start-first",
        dest="start_first",
        action="store_false",
        help="the optimizer's first trial is sampled, not the start (before session 8)",
    )
    p.set_defaults(start_first=True)
    p.add_argument("--ceiling-trials", type=int, default=0, help="a long guided search (0: off)")
    p.add_argument("--space", default="seed")
    p.add_argument("--max-blocks", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument(
        "--fitness", action="append", default=[], help="extra fitness key=value (repeatable)"
    )
    p.add_argument(
        "--rank-sample",
        type=int,
        default=8,
        help="candidates of one run scored on test to "
        "check the fitness's rank agreement with test (0: off)",
    )
    p.add_argument("--jobs", type=int, default=1, help="problems run in parallel processes")
    p.add_argument(
        "--rescore-top",
        type=int,
        default=0,
        help="also report each searched arm with its final choice re-scored: the best K "
        "candidates on fresh fitness items (arm '<arm>+rescore'; 0: off)",
    )
    p.add_argument(
        "--rescore-items", type=int, default=100, help="fresh fitness items per category"
    )
    p.add_argument("--small", action="store_true", help="micro zoo and suite (for tests)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    unknown = sorted(set(args.arms) - set(ARMS))
    if unknown:
        p.error(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    args.fitness_extra = dict(kv.partition("=")[::2] for kv in args.fitness)
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    load_start = os.getloadavg()
    zoo, suite, manifest = _suite(args)
    wanted = args.problems or list(manifest["problems"])
    jobs = [(args, zoo, suite, name, bool(manifest["problems"][name]["hard"])) for name in wanted]
    sampler = LoadSampler()
    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            rows = pool.map(_problem_job, jobs, chunksize=1)
    else:
        rows = [_problem_job(job) for job in jobs]
    load = sampler.stop()
    budgets = sorted(args.budgets)
    verdicts = targets(rows, budgets)
    payload = {
        "format": "darwinmerge-search-suite/1",
        "zoo_seed": args.seed,
        "small": args.small,
        "budgets": budgets,
        "seeds": args.seeds,
        "extra_seeds": args.extra_seeds,
        "subset": args.subset,
        "race": args.race,
        "start_first": args.start_first,
        "rows": rows,
        "targets": verdicts,
        "seconds": round(time.perf_counter() - start, 1),
        "jobs": args.jobs,
        "load": {"start": load_start, "end": os.getloadavg(), **load},
    }
    (args.out / "search_suite.json").write_text(json.dumps(payload, indent=2) + "\n")
    text = markdown(rows, budgets, verdicts)
    (args.out / "search_suite.md").write_text(text)
    plot(rows, budgets, args.out)
    print(text)
    print(
        f"{payload['seconds']} s; load average {load_start[0]:.2f} at the start, "
        f"{payload['load']['end'][0]:.2f} at the end, mean {load['mean']:.2f}, "
        f"max {load['max']:.2f} (1-minute load average sampled every {load['every']} s; "
        f"{args.jobs} job(s) on {os.cpu_count()} cores)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How noisy is one candidate's fitness, against how far apart the candidates a search
visits really are? Exact match against the continuous gold scores, on the demo zoo.

    python benchmarks/fitness_noise.py --zoo runs/zoo --scans RUN/mri --candidates 30 \\
        --out fitness_noise.json
    python benchmarks/fitness_noise.py --small          # a micro zoo, seconds (tests)

Candidates: ``--candidates`` genomes of the seed genome space, half drawn around the MRI
prior's start (``--scans``, a ``darwin mri compare`` folder, built when missing; without
it every draw is blind) and half around the blind start (mean 0.5, sigma 1/6): a genome
is ``clip(mean + sigma * N(0, 1), box)`` and each arm's first draw is its mean. That is
where a search of 10-40 evaluations spends its candidates.

Per candidate (merged in memory once): exact match (greedy generation) on the whole
fitness split and on the whole test split, and the gold continuation's log-probability
``L`` (``gold_logprob``; ``gold_prob`` is ``exp(L)``) and the greedy margin's sigmoid
(``gold_margin``) on the whole fitness split. The
search's fitness set is the seeded stratified subset (``--subset`` items per category,
the ``darwin run`` example's 40) of the fitness split; ``fit-all`` is the whole split.
True quality is test-split exact match (itself noisy: its paired bootstrap SD is shown).

Per score and item set (columns):

* ``sd 1 cand``: median over candidates of the bootstrap SD of the candidate's macro
  fitness (``--boot`` stratified resamples of the items, per category);
* ``sd paired``: the same for the candidate's fitness minus the candidates' mean on the
  same resample (what ranking candidates on shared items actually suffers);
* ``sd between``: SD across candidates of the fitness;
* ``reliab.``: ``1 - mean paired noise variance / between variance`` (share of the
  between-candidate spread that is not item noise; 1 is noiseless);
* ``spearman``: rank correlation across candidates with test exact match;
* ``spearman near`` / ``far``: the same among the first arm's candidates only (around
  the MRI prior's start: the neighbourhood a guided search explores) / the others;
* ``pick test``: test exact match of the candidate this fitness ranks first, against
  the best and the median candidate's test score (table footer).

``--pair A,B`` names the parents' folders inside ``--zoo`` (default father,mother); the
tasks are the zoo folder's ``tasks/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks."""
    x = np.asarray(x, dtype=float)
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="mergesort")] = np.arange(1, len(x) + 1)
    _, inverse = np.unique(x, return_inverse=True)
    return (np.bincount(inverse, weights=ranks) / np.bincount(inverse))[inverse]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: the Pearson correlation of the (tie-averaged) ranks
    (numpy only: scipy is not a dependency)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _groups(cats: list[str]) -> list[np.ndarray]:
    """Item indices per category, categories sorted."""
    return [np.array([i for i, c in enumerate(cats) if c == n]) for n in sorted(set(cats))]


def _macro(values: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Macro mean over categories of ``values[:, idx]`` per row (candidates)."""
    return np.mean([values[:, idx].mean(axis=1) for idx in groups], axis=0)


def noise_row(
    values: np.ndarray, cats: list[str], test: np.ndarray, *, boot: int, seed: int
) -> dict[str, float]:
    """The table's numbers for one score: ``values[c, i]`` per candidate and item."""
    rng = np.random.default_rng(seed)
    groups = _groups(cats)
    fit = _macro(values, groups)
    draws = np.empty((boot, values.shape[0]))
    for b in range(boot):
        idx = [rng.choice(g, size=len(g), replace=True) for g in groups]
        draws[b] = _macro(values, idx)
    single = draws.std(axis=0, ddof=1)
    paired = (draws - draws.mean(axis=1, keepdims=True)).std(axis=0, ddof=1)
    between = float(fit.std(ddof=1)) if len(fit) > 1 else float("nan")
    reliab = 1.0 - float(np.mean(paired**2)) / between**2 if between > 0 else float("nan")
    pick = int(np.argmax(fit))
    return {
        "sd_single": float(np.median(single)),
        "sd_paired": float(np.median(paired)),
        "sd_between": between,
        "reliability": reliab,
        "spearman_test": _spearman(fit, test),
        "pick_test": float(test[pick]),
        "n": int(values.shape[1]),
    }


def _draw(box: Any, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    mean, sigma = np.asarray(box.mean), np.asarray(box.sigma)
    lo, hi = np.asarray(box.lower), np.asarray(box.upper)
    out = [mean.copy()]
    while len(out) < n:
        out.append(np.clip(mean + sigma * rng.standard_normal(len(mean)), lo, hi))
    return out


def _config(
    zoo: Path, prior: dict[str, Any], subset: int | float, batch: int, pair: tuple[str, str]
) -> Any:
    from darwinmerge.evolve.config import EvolveConfig

    return EvolveConfig.model_validate(
        {
            "parents": {pair[0]: str(zoo / pair[0]), pair[1]: str(zoo / pair[1])},
            "tasks": f"zoo:{zoo}",
            "space": {"kind": "seed", "max_blocks": 3},
            "prior": prior,
            "fitness": {"subset": subset, "chunk_size": 64},
            "early_stop": {"enabled": False},
            "backend": {"batch_size": batch, "max_new_tokens": 32},
        }
    )


def _ensure_scans(zoo: Path, scans: Path, pair: tuple[str, str]) -> None:
    if (scans / "comparison.json").is_file():
        return
    from darwinmerge.mri.config import MriConfig
    from darwinmerge.mri.pipeline import compare_models

    print(f"building the MRI comparison into {scans} ...", file=sys.stderr)
    result = compare_models(zoo / pair[0], zoo / pair[1], MriConfig(probes=(f"zoo@{zoo}",)))
    scans.mkdir(parents=True, exist_ok=True)
    result.save(scans)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from darwinmerge.evaluate import evaluate, filter_split, load_tasks, stratified_subset
    from darwinmerge.evolve.api import space_and_prior, worker_spec
    from darwinmerge.evolve.optimizer import SearchBox
    from darwinmerge.evolve.workers import CandidateWorker

    zoo = args.zoo.resolve()
    pair = tuple(args.pair.split(","))
    if len(pair) != 2:
        raise SystemExit(f"--pair: two folder names of the zoo, got {args.pair!r}")
    blind_cfg = _config(zoo, {"kind": "blind"}, args.subset, args.batch_size, pair)
    arms = [("blind", blind_cfg)]
    if args.scans is not None:
        _ensure_scans(zoo, args.scans.resolve(), pair)
        mri = {"kind": "mri", "scans": str(args.scans.resolve())}
        arms.insert(0, ("prior", _config(zoo, mri, args.subset, args.batch_size, pair)))
    rng = np.random.default_rng(args.seed)
    genomes: list[tuple[str, Any, np.ndarray]] = []
    per_arm = [args.candidates // len(arms)] * len(arms)
    per_arm[0] += args.candidates - sum(per_arm)
    for (arm, cfg), n in zip(arms, per_arm, strict=True):
        space, prior = space_and_prior(cfg)
        box = SearchBox.from_prior([g.name for g in space.genes], prior)
        genomes += [(arm, space, g) for g in _draw(box, n, rng)]

    every = load_tasks(blind_cfg.tasks, split=None)
    fit_all = filter_split(every, "fitness")
    test = filter_split(every, "test")
    sub_ids = {it.id for it in stratified_subset(fit_all, args.subset, seed=0)}
    fit_cats = [it.category for it in fit_all]
    in_sub = np.array([it.id in sub_ids for it in fit_all])
    spec = worker_spec(blind_cfg, fit_all, sorted(set(fit_cats)))
    worker = CandidateWorker(spec, "noise")
    em_fit, em_test, logp, margin = [], [], [], []
    seconds = {"generate": 0.0, "gold": 0.0}
    for k, (arm, space, g) in enumerate(genomes):
        recipe = space.decode(g).to_yaml()
        t0 = time.perf_counter()
        r_fit = worker.evaluate_model(recipe, fit_all)  # merges the candidate in
        r_test = evaluate(worker.backend, test, scorer="exact_match", chunk_size=256)
        t1 = time.perf_counter()
        r_gold = evaluate(worker.backend, fit_all, scorer="gold_logprob", chunk_size=256)
        t2 = time.perf_counter()
        r_margin = evaluate(worker.backend, fit_all, scorer="gold_margin", chunk_size=256)
        seconds["generate"] += t1 - t0
        seconds["gold"] += t2 - t1
        em_fit.append([float(it.correct) for it in r_fit.items])
        em_test.append([float(it.correct) for it in r_test.items])
        logp.append([float(it.value or 0.0) for it in r_gold.items])
        margin.append([float(it.value or 0.0) for it in r_margin.items])
        print(
            f"candidate {k + 1}/{len(genomes)} ({arm}): fitness EM "
            f"{r_fit.overall.score:.3f}, test EM {r_test.overall.score:.3f}",
            file=sys.stderr,
        )
    em_f, em_t, lp = np.array(em_fit), np.array(em_test), np.array(logp)
    test_cats = [it.category for it in test]
    true = _macro(em_t, _groups(test_cats))
    sub_cats = [c for c, keep in zip(fit_cats, in_sub, strict=True) if keep]
    scores = {
        "exact_match": em_f,
        "gold_prob": np.exp(lp),
        "gold_logprob": lp,
        "gold_margin": np.array(margin),
    }
    rows = []
    for name, values in scores.items():
        for where, cols, cats in (
            (f"fit-{args.subset}", in_sub, sub_cats),
            ("fit-all", np.ones_like(in_sub), fit_cats),
        ):
            row = noise_row(values[:, cols], cats, true, boot=args.boot, seed=args.seed)
            fit = _macro(values[:, cols], _groups(cats))
            row["fitness"] = [float(v) for v in fit]
            rows.append({"score": name, "items": where, **row})
    test_row = noise_row(em_t, test_cats, true, boot=args.boot, seed=args.seed)
    n_gen = len(genomes) * (len(fit_all) + len(test))
    return {
        "zoo": str(zoo),
        "candidates": [
            {"arm": arm, "genome": [round(float(v), 6) for v in g], "test_em": float(t)}
            for (arm, _, g), t in zip(genomes, true, strict=True)
        ],
        "rows": rows,
        "test": {**test_row, "best": float(true.max()), "median": float(np.median(true))},
        "fitness_items": len(fit_all),
        "subset_items": int(in_sub.sum()),
        "test_items": len(test),
        "ms_per_item": {
            "exact_match": 1e3 * seconds["generate"] / max(1, n_gen),
            "gold_logprob": 1e3 * seconds["gold"] / max(1, len(genomes) * len(fit_all)),
        },
        "load": os.getloadavg(),
        "boot": args.boot,
    }


def arm_stats(res: dict[str, Any]) -> None:
    """Per row, the Spearman among the first arm's candidates (``spearman_near``) and
    among the others (``spearman_far``); per arm, the test scores' spread (in place)."""
    arms = [c["arm"] for c in res["candidates"]]
    test = np.array([c["test_em"] for c in res["candidates"]])
    near = np.array([a == arms[0] for a in arms])
    for row in res["rows"]:
        fit = np.array(row["fitness"])
        for key, m in (("spearman_near", near), ("spearman_far", ~near)):
            row[key] = _spearman(fit[m], test[m]) if m.sum() > 2 else None
    res["arms"] = {
        a: {"n": int(m.sum()), "test_sd": float(test[m].std(ddof=1)) if m.sum() > 1 else 0.0}
        for a in dict.fromkeys(arms)
        for m in [np.array([x == a for x in arms])]
    }


def selection_rows(
    res: dict[str, Any], *, visited: int = 16, top: int = 5, draws: int = 2000, seed: int = 0
) -> list[dict[str, Any]]:
    """What each rule picks among ``visited`` candidates drawn from the measured ones
    (``draws`` times): the mean test score of its pick and the mean regret (the best
    drawn candidate's test score minus the pick's). Rules: the best by a score on the
    search's subset; and the ``top`` best by it re-scored on the whole fitness split
    (the subset plus every fresh item: ``select.rescore_top``'s pooled value, up to the
    categories' weights)."""
    test = np.array([c["test_em"] for c in res["candidates"]])
    fit = {(r["score"], r["items"]): np.array(r["fitness"]) for r in res["rows"]}
    sub = next(items for _, items in fit if items != "fit-all")
    rng = np.random.default_rng(seed)
    n = len(test)
    k = min(visited, n)
    picks: dict[str, list[tuple[float, float]]] = {}
    for _ in range(draws):
        idx = rng.choice(n, size=k, replace=False)
        best = test[idx].max()
        for score in dict.fromkeys(s for s, _ in fit):  # every score, in the rows' order
            f_sub, f_all = fit[(score, sub)][idx], fit[(score, "fit-all")][idx]
            plain = idx[int(np.argmax(f_sub))]
            order = np.argsort(-f_sub, kind="stable")[:top]
            again = idx[order[int(np.argmax(f_all[order]))]]
            for name, pick in ((f"{score} best", plain), (f"{score} + rescore", again)):
                picks.setdefault(name, []).append((test[pick], best - test[pick]))
    return [
        {
            "rule": name,
            "test": float(np.mean([t for t, _ in v])),
            "regret": float(np.mean([r for _, r in v])),
            "visited": k,
            "top": top,
        }
        for name, v in picks.items()
    ]


def render(res: dict[str, Any]) -> str:
    t = res["test"]
    lines = [
        f"Fitness noise on {res['zoo']}: {len(res['candidates'])} candidates, "
        f"{res['fitness_items']} fitness items ({res['subset_items']} in the search's "
        f"subset), {res['test_items']} test items, {res['boot']} bootstrap resamples",
        "",
        "| score | items | n | sd 1 cand | sd paired | sd between | reliab. | spearman "
        "| spearman near | spearman far | pick test |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        near, far = (
            "-" if r.get(k) is None else f"{r[k]:+.2f}" for k in ("spearman_near", "spearman_far")
        )
        lines.append(
            f"| {r['score']} | {r['items']} | {r['n']} | {r['sd_single']:.3g} | "
            f"{r['sd_paired']:.3g} | {r['sd_between']:.3g} | {r['reliability']:.2f} | "
            f"{r['spearman_test']:+.2f} | {near} | {far} | {r['pick_test']:.4f} |"
        )
    lines += [
        "",
        f"True quality (test exact match over candidates): best {t['best']:.4f}, median "
        f"{t['median']:.4f}, SD between {t['sd_between']:.4f}; its own item noise: "
        f"SD 1 cand {t['sd_single']:.4f}, paired {t['sd_paired']:.4f}, reliability "
        f"{t['reliability']:.2f}. Test SD within each arm: "
        + ", ".join(f"{a} {v['test_sd']:.4f} (n={v['n']})" for a, v in res["arms"].items())
        + ".",
        f"Cost per item: exact match {res['ms_per_item']['exact_match']:.1f} ms (generation), "
        f"gold log-prob {res['ms_per_item']['gold_logprob']:.1f} ms (one forward pass); "
        f"load average {', '.join(f'{x:.2f}' for x in res['load'])}.",
    ]
    sel = res.get("selection") or []
    if sel:
        lines += [
            "",
            f"Selection among {sel[0]['visited']} visited candidates (random draws of the "
            f"measured ones); rescore: the best {sel[0]['top']} re-scored on the whole "
            "fitness split:",
            "",
            "| rule | mean test of the pick | mean regret vs the best visited |",
            "|---|---|---|",
            *[f"| {r['rule']} | {r['test']:.4f} | {r['regret']:.4f} |" for r in sel],
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", type=Path, default=None)
    ap.add_argument("--scans", type=Path, default=None)
    ap.add_argument("--pair", default="father,mother", help="the parents' folders in --zoo")
    ap.add_argument("--candidates", type=int, default=30)
    ap.add_argument("--subset", type=int, default=40)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--small", action="store_true", help="a micro zoo, 4 candidates")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--from-json", type=Path, default=None, help="re-render a saved run")
    args = ap.parse_args(argv)
    if args.from_json is not None:
        res = json.loads(args.from_json.read_text())
        arm_stats(res)
        res["selection"] = selection_rows(res, visited=min(16, len(res["candidates"])))
        print(render(res))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        if args.small:
            from darwinmerge.zoo.build import build_zoo, micro_config

            args.zoo = Path(tmp) / "zoo"
            build_zoo(args.zoo, micro_config(seed=1))
            args.scans = Path(tmp) / "scans" if args.scans is None else args.scans
            args.candidates, args.subset, args.boot = 4, 4, 200
        if args.zoo is None:
            ap.error("--zoo is required (or --small)")
        res = measure(args)
    arm_stats(res)
    res["selection"] = selection_rows(res, visited=min(16, len(res["candidates"])))
    print(render(res))
    if args.out:
        args.out.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does the health check find the damaged layer, and does its prescription repair it?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/health_validation.py \\
        --zoo runs/zoo --zoo /tmp/zoo1 [--json out.json]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/health_validation.py --zoo runs/zoo --fast
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/health_validation.py --zoo runs/zoo \
        --kinds none --search-suite runs/search_suite [--max-children 24]
    .venv/bin/python benchmarks/health_validation.py --from-json run.json --calibrate \
        [--rule targets|fewest-alarms] [--margin 0.04 --deviation-margin 0.01]

Parents: the zoo's father (A, t = 0) and mother (B, t = 1). Undamaged children: the
zoo's hand-made recipes ``moe-from-mother`` (MoE 70 % mother, the rest father; "W") and
``uniform-0.5`` (every tensor 50/50; "U"). Each damaged child changes ONE layer ``l`` of
one of them in the recipe (linear weights ``w_A``, ``w_B`` of that layer; other layers
untouched):

| kind | base | the layer's weights |
|---|---|---|
| ``near`` | W | MoE share t + 0.1 (a small change inside the span) |
| ``overshoot{T}`` | U | every component ``(1 - T, T)``: ``W = F + T (M - F)`` |
| ``scale{s}`` | W | every weight times ``s`` |
| ``wrong`` | W | ``t -> 1 - t`` for every component (the other parent's share) |
| ``attn`` / ``router`` | W | that component alone, weights times 0.3 |
| ``experts`` | W | the routed experts alone at ``(1 - 2.5, 2.5)`` |
| ``revive`` | W | experts 0..E/2-1 revived as copies of the father's E/2..E-1 (router rows along) |

Kind ``search`` (``--search-suite DIR``, repeatable: an output folder of
benchmarks/search_suite.py, built on the suite of the first ``--zoo``, or
``--suite-zoo``): per problem, arm and seed the child the arm returns (the best-fitness
trial, that script's ``anytime``), and kind ``search-worst``: the worst-fitness trial of
the blind, guided and random arms among the trials the search made, never the run's
enqueued start (naturally bad children). Parents: the problem's ``a`` (A) and ``b`` (B).
A search child has no damaged layer and no undamaged base; its reference is the best
test score of ``a``, ``b`` and their 50/50 linear merge on the same items (what a user
has without searching), the first flag counts as localized when it names the layer whose
single revert recovers the most on test (measured for every damaged search child), and a
search child no more than 0.02 below its reference (or above it) counts for false
alarms. ``--max-children`` caps them, round robin over problems.

For every child: its test score (greedy exact match, macro over categories, ``--n-test``
items per category, stratified), the health verdict with localization (probes
``zoo@ZOO``), and when the verdict prescribes layer changes the test score of the
repaired recipe (``apply_changes``) and of ``--draws`` random changes of the same kind
(a random layer, a random candidate among span / A / B).

Per kind it reports:

* **detection**: damaged children that lose >= 0.05 on test (against their undamaged
  base) with a verdict that is not healthy;
* **localization**: of those, the first localized layer is the damaged layer, or the
  layer whose revert (``MoveLayerT(l, A|B, 1)``, better of the two, on test) recovers
  the most (computed only when the first flag misses the damaged layer);
* **repair**: of the localized ones, the prescription recovers >= half the test loss;
* **false alarms**: undamaged children and children within 0.02 of their base on test
  whose verdict is not healthy;
* **vs random**: prescribed gain - random gain on test, paired per child; exact sign
  test, pooled over every child with a prescription.

The targets (issue 20): localization >= 80 %, repair >= 80 %, false alarms <= 10 %,
sign test p < 0.01. ``--json`` keeps every child's numbers (recoveries per layer and
candidate) so the margins can be recalibrated without rerunning.

``--from-json RUN --calibrate``: leave-one-seed-out calibration. For each zoo of the run,
the margins (:data:`CAL_MARGINS` x :data:`CAL_DEV_MARGINS`) are chosen on the OTHER zoos'
rows by :func:`select_margins` (rule ``targets``: of the cells meeting both targets there,
the one nearest ``--margin`` / ``--deviation-margin``, by default the current defaults),
and the held-out zoo's table is reported under them; then the held-out rows pooled.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

LOSS_MIN = 0.05  # a damaged child counts for detection when it loses this much on test
NEAR = 0.02  # children this close to their base count for false alarms


def _sign_test(wins: int, losses: int) -> float:
    n = wins + losses
    if n == 0:
        return float("nan")
    k = min(wins, losses)
    p = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * p)


@dataclass
class Child:
    zoo: str
    kind: str
    base: str
    layer: int | None
    recipe: Any
    row: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # search children: where from


def _with_layer_weights(recipe: Any, layer: int, weights: dict[str, tuple[float, float]]) -> Any:
    """``recipe`` with (w_A, w_B) of each named component of ``layer`` pinned."""
    from darwinmerge.merge import Recipe

    data = recipe.model_dump(mode="python")
    for i, p in enumerate(data["parents"]):
        rules = [
            {"component": c, "layers": [layer, layer], "value": float(w[i])}
            for c, w in weights.items()
        ]
        p["parameters"] = {**p["parameters"], "weight": rules + list(p["parameters"]["weight"])}
    return Recipe.parse(data, source="damaged child")


def damaged(kind: str, base: Any, layer: int, L: int, num_experts: int) -> Any:
    from darwinmerge.health import LAYER_COMPONENTS, layer_t
    from darwinmerge.merge.recipe import Transplant

    comps = [c for c in LAYER_COMPONENTS if layer_t(base, layer, c, L) is not None]

    def t(c: str) -> float:
        v = layer_t(base, layer, c, L)
        assert v is not None
        return v

    if kind == "near":
        moe = ("router", "experts", "shared_expert", "shared_expert_gate")
        w = {c: (1 - t(c) - 0.1, t(c) + 0.1) for c in comps if c in moe}
    elif kind.startswith("overshoot"):
        T = float(kind.removeprefix("overshoot"))
        w = {c: (1 - T, T) for c in comps}
    elif kind.startswith("scale"):
        s = float(kind.removeprefix("scale"))
        w = {c: ((1 - t(c)) * s, t(c) * s) for c in comps}
    elif kind == "wrong":
        w = {c: (t(c), 1 - t(c)) for c in comps}
    elif kind in ("attn", "router"):  # the zoo's parents are equal there: scale
        names = {"attn": ("attn", "linear_attn")}.get(kind, (kind,))
        w = {c: ((1 - t(c)) * 0.3, t(c) * 0.3) for c in comps if c in names}
    elif kind == "experts":
        w = {c: (-1.5, 2.5) for c in comps if c == "experts"}
    elif kind == "revive":  # slots 0..E/2-1 revived as copies of the father's others
        half = num_experts // 2
        tps = [
            Transplant(layer=layer, expert=e, source=base.parents[0].name, source_expert=e + half)
            for e in range(half)
        ]
        return base.model_copy(update={"transplants": list(base.transplants) + tps})
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    return _with_layer_weights(base, layer, w)


KIND_BASE = {
    "near": "W",
    "overshoot1.5": "U",
    "overshoot2": "U",
    "overshoot3": "U",
    "scale0.3": "W",
    "scale0.6": "W",
    "wrong": "W",
    "attn": "W",
    "router": "W",
    "experts": "W",
    "revive": "W",
}
FAST_KINDS = "overshoot2"


@dataclass
class Env:
    """What checking and scoring the children of one pair of parents needs: the resident
    child scored on the test items, the probes, the parents and their scans."""

    fitness: Any
    batches: Any
    pa: Any
    pb: Any
    sa: Any
    sb: Any
    L: int
    E: int
    lopt: Any


def make_env(recipe: Any, test: list[Any], zoo: Path, lopt: Any, names: tuple[str, str]) -> Env:
    from darwinmerge.health.fitness import ResidentFitness
    from darwinmerge.mri import resolve_probes, run_scan, tokenize_probes

    fitness = ResidentFitness(recipe, test, batch_size=32)
    tok = fitness.backend.tokenizer
    batches = tokenize_probes(resolve_probes([f"zoo@{zoo}"]), tok, max_length=128, batch_size=16)
    pa, pb = fitness.parents[:2]
    sa = run_scan(pa, batches, model_name=names[0])
    sb = run_scan(pb, batches, model_name=names[1])
    return Env(fitness, batches, pa, pb, sa, sb, sa.num_layers, sa.num_experts, lopt)


def assess(
    ch: Child, env: Env, base_test: float, args: argparse.Namespace, rng: random.Random
) -> dict[str, Any]:
    """One child's row: test score, verdict with localization, and when a layer change is
    prescribed the repaired and random-change test scores; the best single-layer revert
    when the child is damaged and its first flag is not the damaged layer (a search child
    has none: every damaged one gets it, flagged or not)."""
    from darwinmerge.health import MoveLayerT, SetLayerT, apply_changes, health_check, localize
    from darwinmerge.mri import run_scan

    t0 = time.perf_counter()
    L = env.L
    score = env.fitness
    model = env.fitness.merge(ch.recipe)
    scan = run_scan(model, env.batches, model_name=ch.kind)
    loc = localize(model, env.pa, env.pb, env.batches, options=env.lopt)
    verdict = health_check(scan, env.sa, env.sb, localization=loc, localize_options=env.lopt)
    s = score(ch.recipe)
    row: dict[str, Any] = {
        "zoo": ch.zoo,
        "kind": ch.kind,
        "base": ch.base,
        "layer": ch.layer,
        "test": s,
        "base_test": base_test,
        "healthy": verdict.healthy,
        "localized": verdict.localized,
        "worse": [c.category for c in verdict.losses if c.status == "worse"],
        "bi_flags": sorted({f.layer for f in verdict.layer_flags}),
        "routing": any(f.problem for f in verdict.routing_flags),
        # layers of died experts / collapsed routers, with or without loss evidence
        "routing_layers": sorted(
            {f.layer for f in verdict.routing_flags if f.kind != "experts_revived"}
        ),
        "recovery": {c: loc.recovery_of(c).tolist() for c in ("span", "A", "B")},
        "loc": loc.to_dict(),
        "prescription": [c.describe() for c in verdict.prescription],
        **ch.info,
    }
    layer_changes = [c for c in verdict.prescription if isinstance(c, SetLayerT | MoveLayerT)]
    if layer_changes:
        row["repaired"] = score(apply_changes(ch.recipe, layer_changes, L))
        rand = []
        for _ in range(args.draws):
            rl = rng.randrange(L)
            cand = rng.choice(["span", "A", "B"])
            change: Any
            if cand == "span":
                vals = tuple(
                    (c, float(min(max(t, 0.0), 1.0)))
                    for c, t in loc.t_ref.items()
                    if np.isfinite(t)
                )
                change = SetLayerT(rl, vals, "random")
            else:
                change = MoveLayerT(rl, cand, 1.0, "random")
            rand.append(score(apply_changes(ch.recipe, [change], L)))
        row["random"] = float(np.mean(rand))
    loss = base_test - s
    first = verdict.localized[0] if verdict.localized else None
    searched = is_search(row)
    if loss >= LOSS_MIN and (
        searched or (ch.layer is not None and first is not None and first != ch.layer)
    ):
        reverts = [
            max(
                score(apply_changes(ch.recipe, [MoveLayerT(i, side, 1.0, "revert")], L))
                for side in ("A", "B")
            )
            for i in range(L)
        ]
        row["best_revert"] = int(np.argmax(reverts))
        row["reverts"] = reverts
    row["seconds"] = time.perf_counter() - t0
    name = ch.kind if ch.layer is None else f"{ch.kind}@L{ch.layer}"
    if searched:
        name = f"{ch.info['problem']}/{ch.info['arm']}-{ch.info['seed']}#{ch.info['trial']}"
    rep = f" repaired {row['repaired']:.3f} random {row['random']:.3f}" if layer_changes else ""
    print(f"  {ch.base} {name:<16} test {s:.3f} ({-loss:+.3f}) healthy {verdict.healthy!s:<5} "
          f"localized {verdict.localized} best-rec {max(loc.recovery):.3f}{rep} "
          f"[{row['seconds']:.0f} s]", flush=True)  # fmt: skip
    return row


def run_zoo(zoo: Path, args: argparse.Namespace, rng: random.Random) -> list[Child]:
    from darwinmerge.evaluate import load_tasks
    from darwinmerge.evaluate.tasks import stratified_subset
    from darwinmerge.health import LocalizeOptions
    from darwinmerge.zoo.recipes import UNIFORM_HALF, WINNING, to_recipe

    if not (zoo / "zoo.json").is_file():
        raise SystemExit(f"{zoo}: no zoo.json; build it with `darwin zoo build {zoo}`")
    spec = f"zoo:{zoo}"
    test = stratified_subset(load_tasks(spec, split="test"), args.n_test, seed=args.seed)
    bases = {
        "W": to_recipe(WINNING, zoo / "father", zoo / "mother"),
        "U": to_recipe(UNIFORM_HALF, zoo / "father", zoo / "mother"),
    }
    lopt = LocalizeOptions(margin=args.margin, deviation_margin=args.deviation_margin)
    env = make_env(bases["W"], test, zoo, lopt, ("father", "mother"))
    L, E = env.L, env.E
    layers = list(range(L)) if args.layers is None else [int(x) for x in args.layers.split(",")]
    children = [Child(zoo.name, "healthy", b, None, r) for b, r in bases.items()]
    for kind in [k for k in args.kinds.split(",") if k]:
        base = KIND_BASE[kind]
        for layer in layers:
            children.append(
                Child(zoo.name, kind, base, layer, damaged(kind, bases[base], layer, L, E))
            )
    base_score = {b: env.fitness(r) for b, r in bases.items()}
    print(f"{zoo}: {len(children)} children; probes {env.batches.num_sequences} sequences; "
          f"test {len(test)} items; base test W {base_score['W']:.3f} U {base_score['U']:.3f}",
          flush=True)  # fmt: skip
    for ch in children:
        ch.row = assess(ch, env, base_score[ch.base], args, rng)
        _partial(args, [c.row for c in children if c.row], zoo.name)
    return children


def _partial(args: argparse.Namespace, rows: list[dict[str, Any]], tag: str = "search") -> None:
    """The rows so far in ``JSON.partial-TAG`` (a run cut short keeps what it measured;
    ``--from-json`` reads it); the final ``--json`` is written at the end as before."""
    if args.json is not None:
        path = args.json.with_name(f"{args.json.name}.partial-{tag}")
        path.write_text(json.dumps({"rows": rows, "partial": True}, indent=1))


# --------------------------------------------------------------------------- search children
#: arms whose worst-fitness trial is taken too (naturally bad children the search made):
#: blind and random spread over the whole box; guided's box is [0, 1] on every gene the
#: scans are not confident about and +-4 sigma (sigma >= 0.05) on the others, and its
#: trials are what a user of the default search gets; tpe / nsga2 / trusted are left out
WIDE_ARMS = ("blind", "guided", "random")
SEARCH_KINDS = ("search", "search-worst")


def start_trials(run: Path, records: list[dict[str, Any]]) -> set[int]:
    """The numbers of the trials that are the run's own start, not children the search
    made. ``darwin evolve`` enqueues its start (the prior's mean genome) as the first trial
    when ``optimizer.start_first`` (the default); evolution.json does not mark it. The
    signal, in order: the run's Optuna journal (``RUN/study.journal``), where an enqueued
    trial carries the system attribute ``fixed_params``; else, when the run's
    ``config.yaml`` does not turn ``start_first`` off, the first trial (the enqueued one is
    always asked first). Every trial with the genome of a start trial (its copies answered
    from the cache, ``cached_from``) is the start too."""
    from darwinmerge.evolve.study import STUDY_FILE, STUDY_NAME, genome_key

    starts: set[int] | None = None
    journal = run / STUDY_FILE
    if journal.is_file():
        starts = _enqueued(journal, STUDY_NAME)
    if starts is None:
        first = True
        try:
            import yaml

            cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
            first = bool((cfg.get("optimizer") or {}).get("start_first", True))
        except (OSError, ValueError, AttributeError):
            pass
        numbers = [r["number"] for r in records]
        starts = {min(numbers)} if first and numbers else set()
    keys = {genome_key(r["genome"]) for r in records if r["number"] in starts and r.get("genome")}
    return starts | {
        r["number"]
        for r in records
        if r.get("cached_from") in starts or (r.get("genome") and genome_key(r["genome"]) in keys)
    }


def _enqueued(journal: Path, name: str) -> set[int] | None:
    """The trials of study ``name`` in the journal file that were enqueued (Optuna's
    ``fixed_params``), or None when the journal cannot be read."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    try:
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        study = optuna.load_study(study_name=name, storage=storage)
        return {
            t.number for t in study.get_trials(deepcopy=False) if "fixed_params" in t.system_attrs
        }
    except Exception:  # noqa: BLE001 - an unreadable journal falls back to config.yaml
        return None


def is_search(row: dict[str, Any]) -> bool:
    return str(row["kind"]) in SEARCH_KINDS


def _search_suite() -> Any:
    """benchmarks/search_suite.py as a module (its ``anytime`` picks what an arm returns)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parent / "search_suite.py"
    spec = importlib.util.spec_from_file_location("search_suite", path)
    assert spec is not None and spec.loader is not None
    mod = sys.modules.get(spec.name)
    if mod is None or getattr(mod, "__file__", None) != str(path):
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    return mod


def search_picks(folder: Path, worst: bool = True) -> list[dict[str, Any]]:
    """The children of a search-suite output folder (``FOLDER/<problem>/<arm>-<seed>/
    evolution.json``): per problem, arm and seed the trial the arm returns (the best
    fitness over all its trials, ``anytime`` of benchmarks/search_suite.py at the full
    budget) and, for the arms in :data:`WIDE_ARMS` when ``worst``, the worst-fitness trial
    among those the search made (the run's start, :func:`start_trials`, is not one).
    Runs without a readable evolution.json (a search still going) are left out."""
    ss = _search_suite()
    picks: list[dict[str, Any]] = []
    problems = sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "fitness_tasks")
    for prob in problems:
        for run in sorted(prob.iterdir()):
            arm, _, seed = run.name.rpartition("-")
            if arm not in ss.ARMS or not seed.isdigit():
                continue
            try:
                recs = json.loads((run / "evolution.json").read_text())["trials"]
            except (OSError, ValueError, KeyError):
                continue
            done = [r for r in recs if r["state"] == "complete" and r["values"] and r["recipe"]]
            if not done:
                continue
            best = ss.anytime(recs, [max(r["number"] for r in recs) + 1])
            chosen = [("search", next(iter(best.values())))]
            starts = start_trials(run, recs) if worst and arm in WIDE_ARMS else set()
            searched = [r for r in done if r["number"] not in starts]
            if worst and arm in WIDE_ARMS and searched:
                low = min(searched, key=lambda r: (r["values"][0], r["number"]))
                if low["number"] != chosen[0][1]["number"]:
                    chosen.append(("search-worst", low))
            for kind, rec in chosen:
                picks.append(
                    {
                        "folder": str(folder),
                        "problem": prob.name,
                        "arm": arm,
                        "seed": int(seed),
                        "kind": kind,
                        "trial": int(rec["number"]),
                        "fitness": float(rec["values"][0]),
                        "recipe": rec["recipe"],
                    }
                )
    return picks


def interleave(picks: list[dict[str, Any]], cap: int | None) -> list[dict[str, Any]]:
    """Round robin over (folder, problem), each in (seed, arm, kind) order, cut at ``cap``:
    a cap keeps every problem and the first seeds of every arm."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in sorted(picks, key=lambda p: (p["seed"], p["arm"], p["kind"])):
        groups.setdefault((p["folder"], p["problem"]), []).append(p)
    out: list[dict[str, Any]] = []
    queues = [groups[k] for k in sorted(groups)]
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out if cap is None else out[:cap]


def run_search(
    folders: list[Path], zoo: Path, args: argparse.Namespace, rng: random.Random
) -> list[Child]:
    """The children the search returns on the merge-problem suite, each checked against
    its problem's parents ``a`` / ``b`` (probes and test items of ``zoo``, the zoo the
    suite was built from). Reference: the best of ``a``, ``b`` and their 50/50 linear
    merge on the same test items."""
    from darwinmerge.errors import DarwinError
    from darwinmerge.evaluate import TransformersBackend, evaluate, load_tasks
    from darwinmerge.evaluate.tasks import stratified_subset
    from darwinmerge.health import LocalizeOptions
    from darwinmerge.health.fitness import ResidentFitness
    from darwinmerge.merge import Recipe

    ss = _search_suite()
    test = stratified_subset(load_tasks(f"zoo:{zoo}", split="test"), args.n_test, seed=args.seed)
    lopt = LocalizeOptions(margin=args.margin, deviation_margin=args.deviation_margin)
    kinds = set(args.search_kinds.split(","))
    picks = interleave(
        [p for f in folders for p in search_picks(f, args.search_worst) if p["kind"] in kinds],
        args.max_children,
    )
    children: list[Child] = []
    for p in picks:
        recipe = _rooted(
            Recipe.from_yaml(p["recipe"], source=f"{p['problem']}/{p['arm']}-{p['seed']}"),
            Path(p["folder"]),
        )
        info = {k: v for k, v in p.items() if k != "recipe"}
        children.append(Child("search", p["kind"], "-", None, recipe, info=info))
    envs: dict[tuple[str, ...], Env] = {}
    refs: dict[tuple[str, str], dict[str, float]] = {}
    print(f"search children: {len(children)} (of {folders}); test {len(test)} items", flush=True)
    for ch in children:
        paths = tuple(q.path for q in ch.recipe.parents) + (ch.recipe.base or "",)
        if paths not in envs:
            envs[paths] = make_env(ch.recipe, test, zoo, lopt, ("a", "b"))
        env = envs[paths]
        pair = (paths[0], paths[1])
        if pair not in refs:
            tok = env.fitness.backend.tokenizer
            ref = {
                side: float(
                    evaluate(
                        TransformersBackend(m, tok, batch_size=32, max_new_tokens=32), test
                    ).overall.score
                )
                for side, m in (("a", env.pa), ("b", env.pb))
            }
            linear = Recipe.from_yaml(
                ss.linear_yaml({"a": Path(pair[0]), "b": Path(pair[1])}), source="linear"
            )
            same = env.fitness.paths == list(pair)
            ref["linear"] = (env.fitness if same else ResidentFitness(linear, test, batch_size=32))(
                linear
            )
            refs[pair] = ref
            print(f"  {ch.info['problem']}: a {ref['a']:.3f} b {ref['b']:.3f} "
                  f"linear {ref['linear']:.3f}", flush=True)  # fmt: skip
        ref = refs[pair]
        which = max(ref, key=lambda k: ref[k])
        ch.base = which
        ch.info = {**ch.info, **ref, "reference": ref[which]}
        try:
            ch.row = assess(ch, env, ref[which], args, rng)
            _partial(args, [c.row for c in children if c.row])
        except DarwinError as exc:  # one child the engine refuses does not end the run
            print(f"  {ch.info['problem']}/{ch.info['arm']}-{ch.info['seed']}: skipped ({exc})")
    return [ch for ch in children if ch.row]


def _rooted(recipe: Any, folder: Path) -> Any:
    """``recipe`` with the relative scan paths of its ``revive`` (written relative to where
    the search ran) resolved: the first of ``folder``'s ancestors under which they exist."""
    rv = recipe.revive
    if rv is None:
        return recipe
    update = {}
    for key in ("scan", "donor_scan"):
        value = getattr(rv, key)
        if isinstance(value, str) and not Path(value).is_absolute() and not Path(value).exists():
            for root in folder.parents:
                if (root / value).exists():
                    update[key] = str(root / value)
                    break
    return recipe.model_copy(update={"revive": rv.model_copy(update=update)}) if update else recipe


def _pct(n: int, d: int) -> str:
    return "-" if d == 0 else f"{n}/{d} ({100 * n / d:.0f}%)"


def is_damaged(row: dict[str, Any]) -> bool:
    """A damaged child that loses >= LOSS_MIN on test against its reference (a hand-made
    child: its undamaged base; a search child: the best of its parents and their 50/50
    linear merge)."""
    made = row["layer"] is not None or is_search(row)
    return made and row["base_test"] - row["test"] >= LOSS_MIN


def is_calm(row: dict[str, Any]) -> bool:
    """Counted for false alarms: an undamaged hand-made child, one within NEAR of its base
    on test, or a search child no more than NEAR below its reference (one above it is
    undamaged too)."""
    loss = row["base_test"] - row["test"]
    if is_search(row):
        return loss <= NEAR
    return row["layer"] is None or abs(loss) <= NEAR


def _target(row: dict[str, Any]) -> int | None:
    """The layer a first flag should name: the damaged layer, else the best revert."""
    return row["layer"] if row["layer"] is not None else row.get("best_revert")


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-kind table's counts (also used by the test of the fast mode)."""
    out: dict[str, Any] = {}
    order = [*KIND_BASE, *SEARCH_KINDS]
    kinds = sorted(
        {r["kind"] for r in rows}, key=lambda k: (order.index(k) if k in order else -1, k)
    )
    for kind in [*kinds, "all"]:
        rs = rows if kind == "all" else [r for r in rows if r["kind"] == kind]
        dmg = [r for r in rs if is_damaged(r)]
        det = [r for r in dmg if not r["healthy"]]
        loc = [
            r
            for r in dmg
            if r["localized"]
            and (r["localized"][0] == r["layer"] or r["localized"][0] == r.get("best_revert"))
        ]
        rep = [
            r
            for r in loc
            if "repaired" in r and r["repaired"] - r["test"] >= 0.5 * (r["base_test"] - r["test"])
        ]
        calm = [r for r in rs if is_calm(r)]
        alarms = [r for r in calm if not r["healthy"]]
        paired = [r["repaired"] - r["random"] for r in rs if "repaired" in r]
        wins = sum(d > 1e-12 for d in paired)
        losses = sum(d < -1e-12 for d in paired)
        out[kind] = {
            "children": len(rs),
            "damaged": len(dmg),
            "detected": len(det),
            "localized": len(loc),
            "repaired": len(rep),
            "calm": len(calm),
            "alarms": len(alarms),
            "paired": len(paired),
            "wins": wins,
            "losses": losses,
            "mean_diff": float(np.mean(paired)) if paired else float("nan"),
            "p": _sign_test(wins, losses),
        }
    return out


def better_parent(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The search rows judged against the better parent alone (not the linear merge)."""
    return [
        {**r, "base": "a" if r["a"] >= r["b"] else "b", "base_test": max(r["a"], r["b"])}
        for r in rows
        if is_search(r)
    ]


def refit(row: dict[str, Any], margin: float, deviation_margin: float) -> list[int]:
    """The row's localized layers under other margins (from its stored localization)."""
    from darwinmerge.health.localize import LocalizeOptions, flag_layers, leaving_span_components

    opt = LocalizeOptions(margin=margin, deviation_margin=deviation_margin)
    rec = {c: np.asarray(v) for c, v in row["recovery"].items()}
    loc = row["loc"]
    leaving = [
        leaving_span_components(loc["span_t"], loc["span_dist"], loc["t_ref"], i, opt.deviation)
        for i in range(loc["num_layers"])
    ]
    return flag_layers(rec, loc["deviating"], opt, leaving)


def routing_problem(row: dict[str, Any], flagged: list[int]) -> bool:
    """Whether the row's routing flags count under the localization ``flagged``: with loss
    evidence (a worse probe category, or the flag's layer flagged), as in
    ``darwinmerge.health.check.with_loss_evidence``. Rows stored before routing needed
    evidence keep their measured value."""
    if "routing_layers" not in row:
        return bool(row["routing"])
    return bool(row["routing_layers"]) and (
        bool(row["worse"]) or any(layer in flagged for layer in row["routing_layers"])
    )


def with_margins(row: dict[str, Any], margin: float, deviation_margin: float) -> dict[str, Any]:
    """The row as the verdict would be under other margins. A repair measured for another
    first layer than the new first flag does not count (its keys are dropped)."""
    flagged = refit(row, margin, deviation_margin)
    out = {**row, "localized": flagged}
    out["routing"] = routing_problem(row, flagged)
    out["healthy"] = not (flagged or row["worse"] or out["routing"])
    same = bool(flagged) and bool(row["localized"]) and flagged[0] == row["localized"][0]
    if not same:  # a search child's best revert was measured whatever its flags
        for key in (
            ("repaired", "random") if is_search(row) else ("repaired", "random", "best_revert")
        ):
            out.pop(key, None)
    return out


def calibration(rows: list[dict[str, Any]], margins: list[float], dev_margins: list[float]) -> None:
    """Per (margin, deviation margin), recomputed from the stored recoveries: false alarms
    among the calm children and localization among the damaged ones (first flag = the
    damaged layer). Only the swap-scan part is recomputed; the rest of the verdict
    (worse probe loss) is kept as measured; routing flags count with loss evidence."""
    print()
    print("calibration (recomputed): margin / deviation margin -> false alarms among calm "
          "children; first flag = damaged layer (search: best revert) among damaged "
          "children")  # fmt: skip
    groups = sorted({r["zoo"] for r in rows})
    print("  margin / dev. margin: " + " | ".join(groups))
    for m in margins:
        for dm in dev_margins:
            cells = []
            for g in groups:
                cells.append(_calibration_cell([r for r in rows if r["zoo"] == g], m, dm))
            print(f"  {m:.3f} / {dm:.4f}: " + " | ".join(cells))


def grid_counts(rows: list[dict[str, Any]], m: float, dm: float) -> dict[str, int]:
    """Under margins ``(m, dm)``, recomputed from the rows' stored recoveries: false alarms
    among the calm children and first flag = the target layer (the damaged layer, a search
    child's best revert) among the damaged ones."""
    alarms = calm = hits = dmg = 0
    for r in rows:
        flagged = refit(r, m, dm)
        healthy = not (flagged or r["worse"] or routing_problem(r, flagged))
        if is_calm(r):
            calm += 1
            alarms += int(not healthy)
        if is_damaged(r):
            dmg += 1
            hits += int(bool(flagged) and flagged[0] == _target(r))
    return {"alarms": alarms, "calm": calm, "localized": hits, "damaged": dmg}


def _calibration_cell(rows: list[dict[str, Any]], m: float, dm: float) -> str:
    c = grid_counts(rows, m, dm)
    return (
        f"false alarms {_pct(c['alarms'], c['calm'])}, "
        f"localized {_pct(c['localized'], c['damaged'])}"
    )


# ------------------------------------------------------------------ leave-one-seed-out
#: the calibration grid: LocalizeOptions.margin x LocalizeOptions.deviation_margin
CAL_MARGINS = (0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.06)
CAL_DEV_MARGINS = (0.0, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05)
#: the issue's targets the selection reads: localization and false-alarm rates
LOCALIZED_MIN = 0.8
ALARMS_MAX = 0.1
RULES = ("targets", "fewest-alarms")


def _rate(n: int, d: int, empty: float) -> float:
    return n / d if d else empty


def select_margins(
    cells: dict[tuple[float, float], dict[str, int]],
    default: tuple[float, float],
    rule: str = "targets",
) -> tuple[tuple[float, float], str]:
    """The (margin, deviation margin) a rule picks from the grid's counts
    (:func:`grid_counts` per cell, on the training rows only), and which step decided.

    ``targets`` (the default): among the cells that meet both targets on the training
    rows (localized >= :data:`LOCALIZED_MIN` of the damaged children, false alarms <=
    :data:`ALARMS_MAX` of the calm ones), the one nearest the current defaults: change
    the defaults as little as the targets ask. ``fewest-alarms``: among the cells with
    localized >= :data:`LOCALIZED_MIN`, the fewest false alarms, then the most localized,
    then the nearest the defaults.

    Fallbacks (both rules): no cell meets both targets -> ``fewest-alarms``; no cell
    localizes enough -> the most localized, then the fewest false alarms. "Nearest the
    defaults" is ``|m / m0 - 1| + |dm / dm0 - 1|`` (a zero default counts as 1e-9), and
    remaining ties go to the smaller margin, then the smaller deviation margin."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
    m0, dm0 = default

    def dist(key: tuple[float, float]) -> tuple[float, float, float]:
        m, dm = key
        d = abs(m / max(m0, 1e-9) - 1) + abs(dm / max(dm0, 1e-9) - 1)
        return (round(d, 9), m, dm)

    def loc(key: tuple[float, float]) -> float:
        return _rate(cells[key]["localized"], cells[key]["damaged"], 1.0)

    def alarm(key: tuple[float, float]) -> float:
        return _rate(cells[key]["alarms"], cells[key]["calm"], 0.0)

    enough = [k for k in cells if loc(k) >= LOCALIZED_MIN - 1e-12]
    both = [k for k in enough if alarm(k) <= ALARMS_MAX + 1e-12]
    if rule == "targets" and both:
        return min(both, key=dist), "both targets met; nearest the defaults"
    if enough:
        return (
            min(enough, key=lambda k: (alarm(k), -loc(k), *dist(k))),
            "fewest false alarms with localized >= 80%"
            + ("" if rule == "fewest-alarms" else " (no cell meets both targets)"),
        )
    return (
        min(cells, key=lambda k: (-loc(k), alarm(k), *dist(k))),
        "no cell localizes 80%: the most localized",
    )


def leave_one_seed_out(
    rows: list[dict[str, Any]],
    default: tuple[float, float],
    rule: str = "targets",
    margins: tuple[float, ...] = CAL_MARGINS,
    dev_margins: tuple[float, ...] = CAL_DEV_MARGINS,
) -> dict[str, Any]:
    """For each zoo (``row["zoo"]``): the margins :func:`select_margins` picks on the
    OTHER zoos' rows, and the held-out zoo's table under them (:func:`with_margins`,
    :func:`summarise`); ``pooled``: the held-out rows of every fold together; ``all``:
    the margins the rule picks on every row (what a default would be set to)."""
    groups = sorted({r["zoo"] for r in rows})
    if len(groups) < 2:
        raise SystemExit(f"leave-one-seed-out needs rows of two zoos or more; got {groups}")

    def pick(train: list[dict[str, Any]]) -> tuple[tuple[float, float], str]:
        cells = {(m, dm): grid_counts(train, m, dm) for m in margins for dm in dev_margins}
        return select_margins(cells, default, rule)

    folds, held_rows = [], []
    for g in groups:
        (m, dm), why = pick([r for r in rows if r["zoo"] != g])
        held = [with_margins(r, m, dm) for r in rows if r["zoo"] == g]
        held_rows += held
        folds.append({"held_out": g, "margin": m, "deviation_margin": dm, "why": why,
                      "summary": summarise(held)["all"]})  # fmt: skip
    (m, dm), why = pick(rows)
    return {
        "rule": rule,
        "folds": folds,
        "pooled": summarise(held_rows)["all"],
        "all": {"margin": m, "deviation_margin": dm, "why": why},
    }


def print_folds(cal: dict[str, Any]) -> None:
    """The folds of :func:`leave_one_seed_out` as a table, then whether the held-out
    results meet the targets."""
    print()
    print(f"leave-one-seed-out calibration, rule {cal['rule']!r} (margins chosen on the "
          "other zoos' rows; the held-out zoo's rows under them):")  # fmt: skip
    print(f"{'held out':<10}{'margin':>8}{'dev.m.':>8}{'detected':>14}{'localized':>14}"
          f"{'repaired>=1/2':>15}{'false alarms':>15}{'vs random (w/l, p)':>24}")  # fmt: skip
    lines = [(f["held_out"], f"{f['margin']:.3f}", f"{f['deviation_margin']:.4f}",
              f["summary"]) for f in cal["folds"]]  # fmt: skip
    lines.append(("pooled", "", "", cal["pooled"]))
    for name, m, dm, s in lines:
        vr = f"{s['wins']}/{s['losses']} p={s['p']:.2g}" if s["paired"] else "-"
        print(f"{name:<10}{m:>8}{dm:>8}{_pct(s['detected'], s['damaged']):>14}"
              f"{_pct(s['localized'], s['damaged']):>14}"
              f"{_pct(s['repaired'], s['localized']):>15}{_pct(s['alarms'], s['calm']):>15}"
              f"{vr:>24}")  # fmt: skip
    for f in cal["folds"]:
        print(f"  held out {f['held_out']}: {f['why']}")
    a = cal["all"]
    print(f"  on every row the rule picks {a['margin']} / {a['deviation_margin']} ({a['why']})")
    print("  (repair under margins other than the run's counts only children whose first flag "
          "is unchanged; a changed one counts as not repaired)")  # fmt: skip
    p = cal["pooled"]
    checks = [
        ("localization", p["damaged"] > 0 and p["localized"] >= LOCALIZED_MIN * p["damaged"]),
        ("repair", p["localized"] > 0 and p["repaired"] >= 0.8 * p["localized"]),
        ("false alarms", p["calm"] > 0 and p["alarms"] <= ALARMS_MAX * p["calm"]),
        ("vs random", p["paired"] > 0 and p["p"] < 0.01),
    ]
    print("  pooled held out: " + "; ".join(f"{n}: {'met' if ok else 'NOT met'}"
                                             for n, ok in checks))  # fmt: skip


def print_table(summary: dict[str, Any], targets: bool = True) -> None:
    print()
    print(f"{'kind':<14}{'children':>9}{'lose>=.05':>10}{'detected':>14}{'localized':>14}"
          f"{'repaired>=1/2':>15}{'false alarms':>15}{'vs random (w/l, p)':>24}")  # fmt: skip
    for kind, s in summary.items():
        vr = f"{s['wins']}/{s['losses']} p={s['p']:.2g}" if s["paired"] else "-"
        print(f"{kind:<14}{s['children']:>9}{s['damaged']:>10}"
              f"{_pct(s['detected'], s['damaged']):>14}{_pct(s['localized'], s['damaged']):>14}"
              f"{_pct(s['repaired'], s['localized']):>15}{_pct(s['alarms'], s['calm']):>15}"
              f"{vr:>24}")  # fmt: skip
    if not targets:
        return
    a = summary["all"]
    print()
    print("targets: localized >= 80% of damaged; repaired >= 80% of localized; false alarms "
          "<= 10%; vs random p < 0.01")  # fmt: skip
    checks = [
        ("localization", a["damaged"] > 0 and a["localized"] >= 0.8 * a["damaged"]),
        ("repair", a["localized"] > 0 and a["repaired"] >= 0.8 * a["localized"]),
        ("false alarms", a["calm"] > 0 and a["alarms"] <= 0.1 * a["calm"]),
        ("vs random", a["paired"] > 0 and a["p"] < 0.01),
    ]
    print("  " + "; ".join(f"{n}: {'met' if ok else 'NOT met'}" for n, ok in checks))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--zoo", type=Path, action="append", help="a zoo folder (repeatable)")
    ap.add_argument(
        "--kinds", default=",".join(KIND_BASE), help="hand-made kinds ('none': search only)"
    )
    ap.add_argument(
        "--search-suite",
        type=Path,
        action="append",
        default=[],
        help="a benchmarks/search_suite.py output folder: its children, kind 'search' (repeatable)",
    )
    ap.add_argument(
        "--suite-zoo",
        type=Path,
        default=None,
        help="the zoo the search suite was built from (probes, test items; default the first "
        "--zoo)",
    )
    ap.add_argument("--max-children", type=int, default=24, help="cap on the search children")
    ap.add_argument(
        "--search-kinds",
        default=",".join(SEARCH_KINDS),
        help="which search children: 'search' (returned), 'search-worst', or both",
    )
    ap.add_argument(
        "--no-search-worst",
        dest="search_worst",
        action="store_false",
        help="leave out the worst trial of the blind / random arms",
    )
    ap.add_argument("--layers", default=None, help="comma-separated layers (default all)")
    ap.add_argument("--n-test", type=int, default=30, help="test items per category")
    ap.add_argument("--draws", type=int, default=1, help="random changes per child")
    ap.add_argument("--margin", type=float, default=None, help="LocalizeOptions.margin")
    ap.add_argument(
        "--deviation-margin", type=float, default=None, help="LocalizeOptions.deviation_margin"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fast", action="store_true", help="one kind, two layers, few items")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--from-json", type=Path, default=None, help="reprint the tables of a saved run"
    )
    ap.add_argument(
        "--calibrate",
        action="store_true",
        help="with --from-json: leave-one-seed-out choice of the margins (per zoo, chosen "
        "on the other zoos' rows)",
    )
    ap.add_argument("--rule", choices=RULES, default="targets", help="the --calibrate rule")
    args = ap.parse_args(argv)
    margins, dev_margins = list(CAL_MARGINS), list(CAL_DEV_MARGINS)
    torch.set_num_threads(1)
    from darwinmerge.health import LocalizeOptions

    if args.margin is None:
        args.margin = LocalizeOptions().margin
    if args.deviation_margin is None:
        args.deviation_margin = LocalizeOptions().deviation_margin
    if args.calibrate and args.from_json is None:
        ap.error("--calibrate reads a saved run: give --from-json")
    if args.from_json is not None:
        rows = json.loads(args.from_json.read_text())["rows"]
        if args.calibrate:
            cal = leave_one_seed_out(rows, (args.margin, args.deviation_margin), args.rule)
            print_folds(cal)
            return cal
        rows = [with_margins(r, args.margin, args.deviation_margin) for r in rows]
        print(f"margins {args.margin} / {args.deviation_margin} (from {args.from_json})")
        summary = summarise(rows)
        print_table(summary)
        _search_tables(rows)
        calibration(rows, margins, dev_margins)
        return summary
    if args.fast:
        args.kinds, args.layers, args.n_test = FAST_KINDS, args.layers or "0,3", min(args.n_test, 8)
    zoos = args.zoo or [Path("runs/zoo")]
    t0 = time.perf_counter()
    load_start = os.getloadavg()
    rng = random.Random(args.seed)
    rows = []
    if args.kinds != "none":
        for zoo in zoos:
            rows += [c.row for c in run_zoo(zoo.resolve(), args, rng)]
    if args.search_suite:
        suite_zoo = (args.suite_zoo or zoos[0]).resolve()
        folders = [f.resolve() for f in args.search_suite]
        rows += [c.row for c in run_search(folders, suite_zoo, args, rng)]
    summary = summarise(rows)
    print_table(summary)
    _search_tables(rows)
    calibration(rows, margins, dev_margins)
    wall = time.perf_counter() - t0
    load_end = os.getloadavg()
    print(f"\nmargin {args.margin}, deviation margin {args.deviation_margin}; wall {wall:.0f} "
          f"s; load average {load_start[0]:.2f} at the start, "
          f"{load_end[0]:.2f} at the end")  # fmt: skip
    if args.json is not None:
        payload = {"rows": rows, "summary": summary, "seconds": wall,
                   "load": {"start": load_start, "end": load_end}}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=1))
    return summary


def _search_tables(rows: list[dict[str, Any]]) -> None:
    """The search children per problem, and judged against the better parent alone."""
    searched = [r for r in rows if is_search(r)]
    if not searched:
        return
    print()
    print("search children per problem (reference = best of a, b, linear on these items):")
    for prob in sorted({r["problem"] for r in searched}):
        rs = [r for r in searched if r["problem"] == prob]
        r0 = rs[0]
        tests = ", ".join(
            f"{r['arm']}-{r['seed']}{'w' if r['kind'] == 'search-worst' else ''} {r['test']:.3f}"
            f"{'' if r['healthy'] else '*'}"
            for r in rs
        )
        print(f"  {prob}: a {r0['a']:.3f} b {r0['b']:.3f} linear {r0['linear']:.3f}; "
              f"{tests}   (w: worst trial, *: not healthy)")  # fmt: skip
    print()
    print("search children against the better parent alone:")
    print_table(summarise(better_parent(rows)), targets=False)


if __name__ == "__main__":
    main()

"""Does the health check point at the layers that matter, and do its repairs help?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/health_validation.py --zoo runs/zoo

On the demo zoo (father = parent A, mother = parent B) with the zoo's hand-made recipe
``moe-from-mother`` (linear, normalize off) as the healthy child, and deliberately
damaged children made from it by changing ONE layer in the recipe:

* ``scale``: every weight of the layer multiplied by ``--scale`` (the layer's tensors
  shrink toward zero);
* ``overshoot``: the layer extrapolates past the mother, ``t = --overshoot``
  (``w_A = 1 - t``, ``w_B = t``);
* ``wrong``: the layer's t flipped to the other parent for every component
  (``t -> 1 - t``; with this recipe the attention then comes from the mother and the
  MoE block 30 % mother).

``--scale`` and ``--overshoot`` take comma-separated lists; each value makes its own
damaged children (one per layer).

(a) For every child: the health verdict (probes ``zoo@ZOO``) and, per layer, the
single-layer revert effect on the held-out TEST split: the child's layer replaced by
the better parent's (the parent with the higher test score, the father here:
``MoveLayerT(layer, A, step=1)``), score(reverted) - score(child). Reported: the
Spearman rank correlation between the layer flag strength (largest |signed strength|
over probe categories, continuous; > 1 is a flag) and the revert effect, pooled over
(child, layer) pairs and per child; whether the damaged layer is flagged and whether it
is the layer whose revert helps most.

(b) For every damaged child with a non-empty prescription: FITNESS-split score gain of
the prescribed repair (``apply_prescription``) against random changes of the same size
(the same number of ``MoveLayerT`` changes with the same step, random layer, random
parent; ``--draws`` draws averaged), paired per child: mean difference, wins / ties /
losses and the exact two-sided sign test.

Evaluation: greedy generation, exact match, macro accuracy over the 5 categories,
``--n-test`` / ``--n-fit`` items per category (stratified, seeded). One torch thread.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _sign_test(wins: int, losses: int) -> float:
    n = wins + losses
    if n == 0:
        return float("nan")
    k = min(wins, losses)
    p = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * p)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--zoo", type=Path, default=Path("runs/zoo"))
    ap.add_argument("--kinds", default="scale,overshoot,wrong")
    ap.add_argument("--scale", default="0.3", help="comma-separated scale factors")
    ap.add_argument("--overshoot", default="2.0", help="comma-separated overshoot t values")
    ap.add_argument("--n-test", type=int, default=30, help="test items per category")
    ap.add_argument("--n-fit", type=int, default=20, help="fitness items per category")
    ap.add_argument("--draws", type=int, default=3, help="random changes per damaged child")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--step", type=float, default=0.5, help="HealthOptions.move_step")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from darwinmerge.evaluate import evaluate, load_tasks
    from darwinmerge.evaluate.tasks import stratified_subset
    from darwinmerge.health import (
        HealthOptions,
        MoveLayerT,
        apply_changes,
        apply_prescription,
        health_check,
        layer_t,
    )
    from darwinmerge.health.fitness import ResidentFitness
    from darwinmerge.merge import Recipe
    from darwinmerge.mri import resolve_probes, run_scan, spearman, tokenize_probes
    from darwinmerge.zoo.recipes import WINNING, to_recipe

    t_start = time.perf_counter()
    zoo = args.zoo.resolve()
    if not (zoo / "zoo.json").is_file():
        raise SystemExit(f"{zoo}: no zoo.json; build it with `darwin zoo build {zoo}`")
    spec = f"zoo:{zoo}"
    test = stratified_subset(load_tasks(spec, split="test"), args.n_test, seed=args.seed)
    fit_items = stratified_subset(load_tasks(spec, split="fitness"), args.n_fit, seed=args.seed)
    child = to_recipe(WINNING, zoo / "father", zoo / "mother")
    fitness = ResidentFitness(child, fit_items, batch_size=32)
    tok = fitness.backend.tokenizer
    batches = tokenize_probes(resolve_probes([f"zoo@{zoo}"]), tok, max_length=128, batch_size=16)
    sa = run_scan(fitness.parents[0], batches, model_name="father")
    sb = run_scan(fitness.parents[1], batches, model_name="mother")
    L = sa.num_layers
    evals = {"test": 0, "fitness": 0}

    def score_test(recipe: Recipe) -> float:
        fitness.merge(recipe)
        evals["test"] += 1
        return float(evaluate(fitness.backend, test).overall.score)

    def score_fit(recipe: Recipe) -> float:
        evals["fitness"] += 1
        return fitness(recipe)

    def damaged(kind: str, layer: int, amount: float) -> Recipe:
        parents = []
        for i, p in enumerate(child.parents):
            rules: list[dict[str, Any]] = []
            for comp in ("attn", "linear_attn", "norm", "router", "experts", "shared_expert",
                         "shared_expert_gate"):  # fmt: skip
                t = layer_t(child, layer, comp, L)
                assert t is not None
                if kind == "scale":
                    w = [(1 - t) * amount, t * amount][i]
                elif kind == "overshoot":
                    w = [1 - amount, amount][i]
                else:
                    w = [t, 1 - t][i]
                rules.append({"component": comp, "layers": [layer, layer], "value": w})
            old = p.model_dump(mode="python")["parameters"]["weight"]
            parents.append({**p.model_dump(mode="python"), "parameters": {"weight": rules + old}})
        return Recipe.parse({**child.model_dump(mode="python"), "parents": parents})

    children: list[tuple[str, int | None, Recipe]] = [("healthy", None, child)]
    amounts = {
        "scale": [float(x) for x in args.scale.split(",")],
        "overshoot": [float(x) for x in args.overshoot.split(",")],
        "wrong": [0.0],
    }
    for kind in args.kinds.split(","):
        for amount in amounts[kind]:
            label = kind if len(amounts[kind]) == 1 else f"{kind}{amount:g}"
            for layer in range(L):
                children.append((label, layer, damaged(kind, layer, amount)))

    print(f"zoo {zoo}; probes zoo@zoo ({batches.num_sequences} sequences); test items "
          f"{len(test)}, fitness items {len(fit_items)}; {len(children)} children")  # fmt: skip
    print()
    header = (f"{'child':<14}{'test':>7}{'flags':>24}   strength per layer"
              f"{'':<10}revert effect per layer (test)")  # fmt: skip
    print(header)
    pooled_s: list[float] = []
    pooled_e: list[float] = []
    per_child_rho: list[float] = []
    hit_flag = hit_top = first_is_damaged = first_is_top = top_flagged = n_damaged = 0
    rows_b: list[tuple[str, int, float, float, float, float, float]] = []
    rng = random.Random(args.seed)
    for kind, dlayer, recipe in children:
        name = kind if dlayer is None else f"{kind}@L{dlayer}"
        scan = fitness.scan(recipe, batches, name=name)
        verdict = health_check(scan, sa, sb, HealthOptions(move_step=args.step))
        strength = verdict.layer_strength()
        base = score_test(recipe)
        effects = np.array(
            [
                score_test(apply_changes(recipe, [MoveLayerT(i, "A", 1.0, "revert")], L)) - base
                for i in range(L)
            ]  # fmt: skip
        )
        flagged = sorted({f.layer for f in verdict.layer_flags})
        flags = ",".join(f"L{i}" for i in flagged) or "-"
        routing = [f for f in verdict.routing_flags if f.kind != "experts_revived"]
        if routing:
            flags += f" +{len(routing)} routing"
        rho = spearman(strength, effects)
        per_child_rho.append(rho)
        pooled_s.extend(strength.tolist())
        pooled_e.extend(effects.tolist())
        print(f"{name:<14}{base:>7.3f}{flags:>24}   "
              + " ".join(f"{s:5.2f}" for s in strength) + "   "
              + " ".join(f"{e:+.3f}" for e in effects) + f"   rho {rho:+.2f}")  # fmt: skip
        if dlayer is None:
            continue
        n_damaged += 1
        hit_flag += int(dlayer in flagged)
        top = int(np.argmax(effects))
        hit_top += int(top == dlayer)
        top_flagged += int(top in flagged)
        if flagged:
            first_is_damaged += int(flagged[0] == dlayer)
            first_is_top += int(flagged[0] == top)
        if not verdict.prescription:
            continue
        before = score_fit(recipe)
        repaired = apply_prescription(recipe, verdict)
        prescribed = score_fit(repaired) - before
        test_gain = score_test(repaired) - base
        n_moves = len(verdict.prescription)
        step = verdict.options["move_step"]
        rand = []
        for _ in range(args.draws):
            changes = [
                MoveLayerT(rng.randrange(L), rng.choice(["A", "B"]), step, "random")
                for _ in range(n_moves)
            ]
            rand.append(score_fit(apply_changes(recipe, changes, L)) - before)
        rows_b.append(
            (
                name,
                n_moves,
                before,
                prescribed,
                float(np.mean(rand)),
                float(np.std(rand)),
                test_gain,
            )
        )

    print()
    print("(a) flags vs single-layer revert effect (test split)")
    print(f"  Spearman, pooled over {len(pooled_s)} (child, layer) pairs: "
          f"{spearman(np.array(pooled_s), np.array(pooled_e)):+.3f}")  # fmt: skip
    finite = [r for r in per_child_rho if np.isfinite(r)]
    print(f"  Spearman per child (4 layers each): mean {np.mean(finite):+.3f} over "
          f"{len(finite)} children with a defined value (of {len(per_child_rho)})")  # fmt: skip
    print(f"  damaged children: {n_damaged}; damaged layer flagged: {hit_flag}; layer whose "
          f"revert helps most is flagged: {top_flagged}; "
          f"is the damaged layer: {hit_top}")  # fmt: skip
    print(f"  earliest flagged layer (upstream first) = damaged layer: {first_is_damaged}; "
          f"= layer whose revert helps most: {first_is_top}")  # fmt: skip
    print()
    print("(b) prescribed repair vs random changes of the same size (fitness split gain)")
    print(f"  {'child':<14}{'changes':>8}{'before':>8}{'prescr.':>9}{'random':>9}{'(sd)':>7}"
          f"{'prescr. on test':>17}")  # fmt: skip
    for name, n, before, pres, rmean, rsd, tg in rows_b:
        print(f"  {name:<14}{n:>8}{before:>8.3f}{pres:>+9.3f}{rmean:>+9.3f}{rsd:>7.3f}"
              f"{tg:>+17.3f}")  # fmt: skip
    if rows_b:
        diffs = np.array([r[3] - r[4] for r in rows_b])
        wins, losses = int((diffs > 1e-12).sum()), int((diffs < -1e-12).sum())
        ties = len(diffs) - wins - losses
        print(f"  paired (prescribed - random mean) over {len(diffs)} children: mean "
              f"{diffs.mean():+.4f}; wins/ties/losses {wins}/{ties}/{losses}; sign test "
              f"p = {_sign_test(wins, losses):.3g}")  # fmt: skip
    else:
        print("  no damaged child had a prescription")
    print()
    print(f"evaluations: {evals['test']} test, {evals['fitness']} fitness; "
          f"wall {time.perf_counter() - t_start:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()

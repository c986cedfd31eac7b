"""Does the health check find the damaged layer, and does its prescription repair it?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/health_validation.py \\
        --zoo runs/zoo --zoo /tmp/zoo1 [--json out.json]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/health_validation.py --zoo runs/zoo --fast

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
"""

from __future__ import annotations

import argparse
import json
import math
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


def run_zoo(zoo: Path, args: argparse.Namespace, rng: random.Random) -> list[Child]:
    from darwinmerge.evaluate import load_tasks
    from darwinmerge.evaluate.tasks import stratified_subset
    from darwinmerge.health import (
        LocalizeOptions,
        MoveLayerT,
        SetLayerT,
        apply_changes,
        health_check,
        localize,
    )
    from darwinmerge.health.fitness import ResidentFitness
    from darwinmerge.mri import resolve_probes, run_scan, tokenize_probes
    from darwinmerge.zoo.recipes import UNIFORM_HALF, WINNING, to_recipe

    if not (zoo / "zoo.json").is_file():
        raise SystemExit(f"{zoo}: no zoo.json; build it with `darwin zoo build {zoo}`")
    spec = f"zoo:{zoo}"
    test = stratified_subset(load_tasks(spec, split="test"), args.n_test, seed=args.seed)
    bases = {
        "W": to_recipe(WINNING, zoo / "father", zoo / "mother"),
        "U": to_recipe(UNIFORM_HALF, zoo / "father", zoo / "mother"),
    }
    fitness = ResidentFitness(bases["W"], test, batch_size=32)
    tok = fitness.backend.tokenizer
    batches = tokenize_probes(resolve_probes([f"zoo@{zoo}"]), tok, max_length=128, batch_size=16)
    pa, pb = fitness.parents
    sa = run_scan(pa, batches, model_name="father")
    sb = run_scan(pb, batches, model_name="mother")
    L = sa.num_layers
    E = sa.num_experts
    lopt = LocalizeOptions(margin=args.margin, deviation_margin=args.deviation_margin)

    def score(recipe: Any) -> float:
        return fitness(recipe)

    layers = list(range(L)) if args.layers is None else [int(x) for x in args.layers.split(",")]
    children = [Child(zoo.name, "healthy", b, None, r) for b, r in bases.items()]
    for kind in args.kinds.split(","):
        base = KIND_BASE[kind]
        for layer in layers:
            children.append(
                Child(zoo.name, kind, base, layer, damaged(kind, bases[base], layer, L, E))
            )
    base_score = {b: score(r) for b, r in bases.items()}
    print(f"{zoo}: {len(children)} children; probes {batches.num_sequences} sequences; test "
          f"{len(test)} items; base test W {base_score['W']:.3f} U {base_score['U']:.3f}",
          flush=True)  # fmt: skip
    for ch in children:
        t0 = time.perf_counter()
        model = fitness.merge(ch.recipe)
        scan = run_scan(model, batches, model_name=ch.kind)
        loc = localize(model, pa, pb, batches, options=lopt)
        verdict = health_check(scan, sa, sb, localization=loc, localize_options=lopt)
        s = score(ch.recipe)
        row: dict[str, Any] = {
            "zoo": ch.zoo,
            "kind": ch.kind,
            "base": ch.base,
            "layer": ch.layer,
            "test": s,
            "base_test": base_score[ch.base],
            "healthy": verdict.healthy,
            "localized": verdict.localized,
            "worse": [c.category for c in verdict.losses if c.status == "worse"],
            "bi_flags": sorted({f.layer for f in verdict.layer_flags}),
            "routing": any(f.kind != "experts_revived" for f in verdict.routing_flags),
            "recovery": {c: loc.recovery_of(c).tolist() for c in ("span", "A", "B")},
            "loc": loc.to_dict(),
            "prescription": [c.describe() for c in verdict.prescription],
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
        loss = base_score[ch.base] - s
        first = verdict.localized[0] if verdict.localized else None
        if ch.layer is not None and loss >= LOSS_MIN and first is not None and first != ch.layer:
            reverts = [
                max(
                    score(apply_changes(ch.recipe, [MoveLayerT(i, side, 1.0, "revert")], L))
                    for side in ("A", "B")
                )
                for i in range(L)
            ]
            row["best_revert"] = int(np.argmax(reverts))
        row["seconds"] = time.perf_counter() - t0
        ch.row = row
        name = ch.kind if ch.layer is None else f"{ch.kind}@L{ch.layer}"
        rep = f" repaired {row['repaired']:.3f} random {row['random']:.3f}" if layer_changes else ""
        print(f"  {ch.base} {name:<16} test {s:.3f} ({-loss:+.3f}) healthy {verdict.healthy!s:<5} "
              f"localized {verdict.localized} best-rec {max(loc.recovery):.3f}{rep} "
              f"[{row['seconds']:.0f} s]", flush=True)  # fmt: skip
    return children


def _pct(n: int, d: int) -> str:
    return "-" if d == 0 else f"{n}/{d} ({100 * n / d:.0f}%)"


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-kind table's counts (also used by the test of the fast mode)."""
    out: dict[str, Any] = {}
    kinds = sorted(
        {r["kind"] for r in rows}, key=lambda k: list(KIND_BASE).index(k) if k in KIND_BASE else -1
    )
    for kind in [*kinds, "all"]:
        rs = rows if kind == "all" else [r for r in rows if r["kind"] == kind]
        dmg = [r for r in rs if r["layer"] is not None and r["base_test"] - r["test"] >= LOSS_MIN]
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
        calm = [r for r in rs if r["layer"] is None or abs(r["base_test"] - r["test"]) <= NEAR]
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


def refit(row: dict[str, Any], margin: float, deviation_margin: float) -> list[int]:
    """The row's localized layers under other margins (from its stored localization)."""
    from darwinmerge.health.localize import LocalizeOptions, flag_layers

    opt = LocalizeOptions(margin=margin, deviation_margin=deviation_margin)
    rec = {c: np.asarray(v) for c, v in row["recovery"].items()}
    return flag_layers(rec, row["loc"]["deviating"], opt)


def with_margins(row: dict[str, Any], margin: float, deviation_margin: float) -> dict[str, Any]:
    """The row as the verdict would be under other margins. A repair measured for another
    first layer than the new first flag does not count (its keys are dropped)."""
    flagged = refit(row, margin, deviation_margin)
    out = {**row, "localized": flagged}
    out["healthy"] = not (flagged or row["worse"] or row["routing"])
    same = bool(flagged) and bool(row["localized"]) and flagged[0] == row["localized"][0]
    if not same:
        for key in ("repaired", "random", "best_revert"):
            out.pop(key, None)
    return out


def calibration(rows: list[dict[str, Any]], margins: list[float], dev_margins: list[float]) -> None:
    """Per (margin, deviation margin), recomputed from the stored recoveries: false alarms
    among the calm children and localization among the damaged ones (first flag = the
    damaged layer). Only the swap-scan part is recomputed; the rest of the verdict
    (worse probe loss, routing) is kept as measured."""
    print()
    print("calibration (recomputed): margin / deviation margin -> false alarms among calm "
          "children; first flag = damaged layer among damaged children")  # fmt: skip
    groups = sorted({r["zoo"] for r in rows})
    print("  margin / dev. margin: " + " | ".join(groups))
    for m in margins:
        for dm in dev_margins:
            cells = []
            for g in groups:
                cells.append(_calibration_cell([r for r in rows if r["zoo"] == g], m, dm))
            print(f"  {m:.3f} / {dm:.4f}: " + " | ".join(cells))


def _calibration_cell(rows: list[dict[str, Any]], m: float, dm: float) -> str:
    alarms = calm = hits = dmg = 0
    for r in rows:
        flagged = refit(r, m, dm)
        healthy = not (flagged or r["worse"] or r["routing"])
        loss = r["base_test"] - r["test"]
        if r["layer"] is None or abs(loss) <= NEAR:
            calm += 1
            alarms += int(not healthy)
        if r["layer"] is not None and loss >= LOSS_MIN:
            dmg += 1
            hits += int(bool(flagged) and flagged[0] == r["layer"])
    return f"false alarms {_pct(alarms, calm)}, localized {_pct(hits, dmg)}"


def print_table(summary: dict[str, Any]) -> None:
    print()
    print(f"{'kind':<14}{'children':>9}{'lose>=.05':>10}{'detected':>14}{'localized':>14}"
          f"{'repaired>=1/2':>15}{'false alarms':>15}{'vs random (w/l, p)':>24}")  # fmt: skip
    for kind, s in summary.items():
        vr = f"{s['wins']}/{s['losses']} p={s['p']:.2g}" if s["paired"] else "-"
        print(f"{kind:<14}{s['children']:>9}{s['damaged']:>10}"
              f"{_pct(s['detected'], s['damaged']):>14}{_pct(s['localized'], s['damaged']):>14}"
              f"{_pct(s['repaired'], s['localized']):>15}{_pct(s['alarms'], s['calm']):>15}"
              f"{vr:>24}")  # fmt: skip
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
    ap.add_argument("--kinds", default=",".join(KIND_BASE))
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
    args = ap.parse_args(argv)
    margins = [0.02, 0.025, 0.03, 0.04, 0.05]
    dev_margins = [0.0, 0.002, 0.005, 0.01, 0.02]
    torch.set_num_threads(1)
    from darwinmerge.health import LocalizeOptions

    if args.margin is None:
        args.margin = LocalizeOptions().margin
    if args.deviation_margin is None:
        args.deviation_margin = LocalizeOptions().deviation_margin
    if args.from_json is not None:
        rows = json.loads(args.from_json.read_text())["rows"]
        rows = [with_margins(r, args.margin, args.deviation_margin) for r in rows]
        print(f"margins {args.margin} / {args.deviation_margin} (from {args.from_json})")
        summary = summarise(rows)
        print_table(summary)
        calibration(rows, margins, dev_margins)
        return summary
    if args.fast:
        args.kinds, args.layers, args.n_test = FAST_KINDS, args.layers or "0,3", min(args.n_test, 8)
    zoos = args.zoo or [Path("runs/zoo")]
    t0 = time.perf_counter()
    rng = random.Random(args.seed)
    rows = []
    for zoo in zoos:
        rows += [c.row for c in run_zoo(zoo.resolve(), args, rng)]
    summary = summarise(rows)
    print_table(summary)
    calibration(rows, margins, dev_margins)
    wall = time.perf_counter() - t0
    print(f"\nmargin {args.margin}, deviation margin {args.deviation_margin}; wall {wall:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return summary


if __name__ == "__main__":
    main()

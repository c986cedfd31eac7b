"""Dead-expert revival, measured on the demo zoo (issue 8, item 3).

On a zoo built with ``darwin zoo build`` (father and the second mother,
``mother_collapsed``, whose router was trained to concentrate on few experts):

1. MRI scans of the father and the collapsed mother on the zoo's probes (``zoo@ZOO``):
   the dead-expert table per sparse layer (dead fraction with its bootstrap interval).
2. A resident child merged with the real engine (``ResidentMerge``) for every candidate:
   * the collapsed mother alone and the mother with revival (``revive:`` from the father);
   * a small grid of father x mother merges **without** revival scored on the FITNESS
     split; the best one, and the same recipe **with** revival;
   * variants of revival (router rows scaled, norm-matched, shifted by the mean update
     of the mother's other rows, the whole router of the revived layers from the father,
     that router and its input norm from the father, revival at higher thresholds),
     each with revival on, chosen on the FITNESS split;
   * a diagnosis on the FITNESS split: the mother with one part taken back from the
     father (the revived layers whole, the routed experts, the routers + their input
     norms, the MoE blocks + input norms), to see where her loss lives.
3. The test split: the four models of item 3 (plus the father and every variant, the
   kept one marked; the others for the record),
   per category with Wilson intervals and exact paired tests (McNemar per category,
   stratified sign test overall) against the collapsed mother and the father.
4. MRI of the revived children: utilisation of the revived slots (mean, min, share
   that get any token, per probe category) next to the same slots in the mother and in
   the father.

Nothing is chosen on the test split. ``--out FILE`` writes everything as JSON, including
every model's per-item correctness (the tables recompute from it).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/revival.py --zoo runs/zoo --out rev.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

FATHER = "father"
ROUTER_KEY = "model.layers.{layer}.mlp.gate.weight"

#: (t for the router, t for the rest of the MoE block, t elsewhere): the mother's share.
DEFAULT_GRID: tuple[tuple[float, float, float], ...] = (
    (0.1, 0.1, 0.0),
    (0.2, 0.2, 0.0),
    (0.3, 0.3, 0.0),
    (0.5, 0.5, 0.0),
    (0.7, 0.7, 0.0),
    (1.0, 1.0, 0.0),
    (0.0, 0.5, 0.0),
    (0.0, 0.7, 0.0),
    (0.0, 1.0, 0.0),
    (0.1, 0.1, 0.1),
    (0.2, 0.2, 0.2),
    (0.3, 0.3, 0.3),
    (0.5, 0.5, 0.5),
)
DEFAULT_SCALES: tuple[float, ...] = (2.0, 4.0)
#: revival at higher utilisation thresholds (more experts count as dead)
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.25, 0.5)


# ----------------------------------------------------------------------------- recipes
def _linear_data(
    father: Path, mother: Path, mother_name: str, rules: list[dict[str, Any]]
) -> dict[str, Any]:
    """A linear recipe (no normalisation, the father donates) giving the mother the
    weight of each schedule rule in ``rules`` and the father the rest (``1 - value``)."""
    return {
        "method": "linear",
        "parents": [
            {
                "name": FATHER,
                "path": str(father),
                "parameters": {"weight": [{**r, "value": 1.0 - r["value"]} for r in rules]},
            },
            {"name": mother_name, "path": str(mother), "parameters": {"weight": rules}},
        ],
        "parameters": {"normalize": False},
        "donor": FATHER,
    }


def pair_recipe(
    father: Path,
    mother: Path,
    mother_name: str,
    *,
    t_router: float,
    t_moe: float,
    t_rest: float,
    revive: dict[str, Any] | None = None,
    router_from_father: Sequence[int] = (),
    norm_from_father: Sequence[int] = (),
) -> Any:
    """Linear father x mother merge (weights ``1 - t`` / ``t``, no normalisation) with the
    mother's share ``t_router`` for the routers, ``t_moe`` for the experts and shared
    expert, ``t_rest`` elsewhere; ``revive`` is the recipe's ``revive:`` field;
    ``router_from_father`` takes the father's whole router in those layers and
    ``norm_from_father`` the father's router input norm (``post_attention_layernorm``)."""
    from darwinmerge.merge import Recipe

    rules: list[dict[str, Any]] = [
        {
            "component": "norm",
            "filter": "post_attention_layernorm",
            "layers": [la, la],
            "value": 0.0,
        }
        for la in norm_from_father
    ]
    rules += [
        {"component": "router", "value": t_router},
        {"component": "mlp", "value": t_moe},
        {"value": t_rest},
    ]
    data = _linear_data(father, mother, mother_name, rules)
    if router_from_father:
        data["router"] = [
            {"layers": [layer, layer], "source": FATHER} for layer in router_from_father
        ]
    if revive is not None:
        data["revive"] = revive
    return Recipe.parse(data, source="benchmarks/revival.py")


# ------------------------------------------------------------------------- variants
Edit = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[int, list[int]]], None]


def _rows(state: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    return state[ROUTER_KEY.format(layer=layer)]


def edit_scale(k: float) -> Edit:
    """Revived router rows times ``k`` (their logits, and so their chance to win, grow)."""

    def run(child: dict[str, torch.Tensor], father: dict[str, torch.Tensor], rev: dict) -> None:
        for layer, ids in rev.items():
            _rows(child, layer)[ids] *= k

    return run


def edit_norm_match(child: dict, father: dict, rev: dict[int, list[int]]) -> None:
    """Each revived row rescaled to the mean L2 norm of the layer's other (live) rows."""
    for layer, ids in rev.items():
        w = _rows(child, layer)
        live = [e for e in range(w.shape[0]) if e not in ids]
        if not live:
            continue
        target = w[live].norm(dim=1).mean()
        for e in ids:
            w[e] *= target / w[e].norm().clamp_min(1e-12)


def edit_offset(child: dict, father: dict, rev: dict[int, list[int]]) -> None:
    """Each revived row (the father's) plus the mean shift the other rows took between
    the father's router and the child's: the father's key moved into the child's
    routing frame."""
    for layer, ids in rev.items():
        w, wf = _rows(child, layer), _rows(father, layer)
        live = [e for e in range(w.shape[0]) if e not in ids]
        if not live:
            continue
        shift = (w[live] - wf[live]).mean(0)
        for e in ids:
            w[e] += shift


# ------------------------------------------------------------------------ the bench
@dataclass(eq=False)
class Candidate:
    name: str
    recipe: Any
    edit: Edit | None = None
    note: str = ""
    revived: dict[int, list[int]] = field(default_factory=dict)


def state_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def dead_table(
    scan_f: Any, scan_m: Any, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> list[dict[str, Any]]:
    """Per sparse layer: dead fraction with its bootstrap interval, father vs mother, and
    the experts that would count as dead at the higher ``thresholds``."""
    rows = []
    for s, layer in enumerate(scan_f.sparse_layers):
        row: dict[str, Any] = {"layer": int(layer)}
        for tag, sc in (("father", scan_f), ("mother", scan_m)):
            util = sc.utilisation[s]
            row[tag] = {
                "dead_fraction": float(sc.dead_fraction[s]),
                "interval": [float(x) for x in sc.dead_interval[s]],
                "dead": [int(e) for e in np.flatnonzero(util < sc.dead_threshold)],
                "dead_at": {
                    f"{th:g}": [int(e) for e in np.flatnonzero(util < th)] for th in thresholds
                },
                "utilisation": [round(float(u), 4) for u in util],
                "router_entropy": float(sc.router_entropy[s]),
                "load_entropy": float(sc.load_entropy[s]),
            }
        rows.append(row)
    return rows


def slot_utilisation(scan: Any, slots: dict[int, list[int]]) -> dict[str, Any]:
    """Utilisation of ``slots`` ({layer: [experts]}) in ``scan``: per slot (tie-aware and
    the router's own top-k), per probe category, and the summary (mean, min, share of
    slots that get any token, share above the dead threshold)."""
    per_slot = []
    cats = scan.categories
    for layer, ids in sorted(slots.items()):
        s = scan.sparse_layers.index(layer)
        counts = scan.expert_counts[s]  # [N, E]
        for e in ids:
            by_cat = {}
            for c, name in enumerate(cats):
                sel = scan.seq_category == c
                fair = scan.tokens[sel].sum() * scan.top_k / scan.num_experts
                by_cat[name] = float(counts[sel, e].sum() / fair) if fair > 0 else float("nan")
            per_slot.append(
                {
                    "layer": int(layer),
                    "expert": int(e),
                    "utilisation": float(scan.utilisation[s, e]),
                    "utilisation_hard": float(scan.utilisation_hard[s, e]),
                    "tokens": float(counts[:, e].sum()),
                    "by_category": by_cat,
                }
            )
    u = np.array([p["utilisation"] for p in per_slot]) if per_slot else np.zeros(0)
    tok = np.array([p["tokens"] for p in per_slot]) if per_slot else np.zeros(0)
    return {
        "slots": per_slot,
        "n": len(per_slot),
        "mean": float(u.mean()) if u.size else float("nan"),
        "min": float(u.min()) if u.size else float("nan"),
        "share_any_token": float((tok > 0).mean()) if u.size else float("nan"),
        "share_alive": float((u >= scan.dead_threshold).mean()) if u.size else float("nan"),
    }


def result_payload(res: Any) -> dict[str, Any]:
    """An EvalResult as JSON: the table and every item's correctness."""
    return {
        "table": {
            k: {"score": s.score, "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n}
            for k, s in res.table().items()
        },
        "items": {it.id: [it.category, bool(it.correct)] for it in res.items},
    }


def table_from_items(items: dict[str, list[Any]]) -> dict[str, dict[str, float]]:
    """Recompute a payload's table (Wilson per category, macro overall) from its items."""
    from darwinmerge.evaluate import macro_interval, wilson_interval

    per: dict[str, list[int]] = {}
    for cat, ok in items.values():
        per.setdefault(cat, [0, 0])
        per[cat][0] += int(ok)
        per[cat][1] += 1
    out = {}
    for cat in sorted(per):
        k, n = per[cat]
        lo, hi = wilson_interval(k, n)
        out[cat] = {"score": k / n, "ci_low": lo, "ci_high": hi, "n": n}
    m, lo, hi = macro_interval([tuple(v) for v in (per[c] for c in sorted(per))])  # type: ignore[misc]
    out["overall"] = {"score": m, "ci_low": lo, "ci_high": hi, "n": sum(v[1] for v in per.values())}
    return out


class Bench:
    """Parents loaded once; one resident child re-merged per candidate (the engine), then
    edited in place for the script-side variants; scored and scanned on demand."""

    def __init__(
        self,
        zoo: Path,
        mother_name: str,
        *,
        work: Path,
        batch_size: int = 32,
        bootstrap: int = 1000,
        threshold: float = 0.05,
        log: Callable[[str], None] = print,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        import darwinmerge.mri.revival  # noqa: F401  (registers the scan reader)
        from darwinmerge.evaluate import TransformersBackend
        from darwinmerge.merge import StateDictSource
        from darwinmerge.mri import ScanOptions
        from darwinmerge.mri.probes import resolve_probes, tokenize_probes

        self.zoo, self.mother_name, self.work, self.log = zoo, mother_name, work, log
        self.threshold = threshold
        self.father_dir, self.mother_dir = zoo / FATHER, zoo / mother_name

        def load(p: Path) -> Any:
            return AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval()

        self.father, self.mother = load(self.father_dir), load(self.mother_dir)
        self.father_state = {k: v.detach().clone() for k, v in self.father.state_dict().items()}
        self.sources = [
            StateDictSource.from_model(self.father),
            StateDictSource.from_model(self.mother),
        ]
        self.tok = AutoTokenizer.from_pretrained(self.father_dir)
        self.backend = TransformersBackend(
            load(self.father_dir), self.tok, batch_size=batch_size, max_new_tokens=32
        )
        self.child: torch.nn.Module = self.backend.model
        self.probes = tokenize_probes(resolve_probes([f"zoo@{zoo}"]), self.tok)
        self.options = ScanOptions(bootstrap_resamples=bootstrap, dead_threshold=threshold)
        self.merger: Any = None
        self.current: Candidate | None = None
        self.cache: dict[tuple[str, str], Any] = {}
        self.hashes: dict[str, str] = {}
        self.seconds: dict[str, float] = {}

    # ------------------------------------------------------------------ scans
    def scan(self, model: torch.nn.Module, name: str) -> Any:
        from darwinmerge.mri import run_scan

        return run_scan(model, self.probes, model_name=name, options=self.options)

    def parent_scans(self) -> tuple[Any, Any]:
        t0 = time.perf_counter()
        sf, sm = self.scan(self.father, FATHER), self.scan(self.mother, self.mother_name)
        (self.work / "scans").mkdir(parents=True, exist_ok=True)
        sf.save(self.work / "scans", "father")
        sm.save(self.work / "scans", "mother")
        self.scan_paths = {
            FATHER: str(self.work / "scans" / "father.json"),
            self.mother_name: str(self.work / "scans" / "mother.json"),
        }
        self.log(f"scanned both parents in {time.perf_counter() - t0:.0f} s")
        return sf, sm

    def revive_field(self, threshold: float | None = None) -> dict[str, Any]:
        return {
            "source": FATHER,
            "into": self.mother_name,
            "scan": self.scan_paths[self.mother_name],
            "donor_scan": self.scan_paths[FATHER],
            "threshold": self.threshold if threshold is None else threshold,
        }

    # ---------------------------------------------------------------- realise
    def realise(self, cand: Candidate) -> torch.nn.Module:
        """Merge ``cand`` into the resident child (engine), then its script-side edit."""
        from darwinmerge.merge import ResidentMerge, match_parents, write_into_model
        from darwinmerge.merge.revive import revival_transplants

        if self.current is cand:
            return self.child
        if self.merger is None:
            self.merger = ResidentMerge(
                self.child, self.sources, match_parents(cand.recipe, self.sources)
            )
        self.merger.apply(cand.recipe)
        transplants, _notes = revival_transplants(cand.recipe, self.merger.matching)
        rev: dict[int, list[int]] = {}
        for tp in transplants:
            rev.setdefault(tp.layer, []).append(tp.expert)
        cand.revived = {k: sorted(v) for k, v in sorted(rev.items())}
        if cand.edit is not None:
            with torch.no_grad():
                state = {k: v.detach().clone() for k, v in self.child.state_dict().items()}
                cand.edit(state, self.father_state, cand.revived)
                write_into_model(self.child, state)
            self.merger.forget()  # the child no longer holds what the engine merged
        self.current = cand
        self.hashes[cand.name] = state_hash(self.child)
        return self.child

    def score(self, cand: Candidate, split: str, items: Sequence[Any]) -> Any:
        from darwinmerge.evaluate import evaluate

        self.realise(cand)
        key = (self.hashes[cand.name], split)
        if key not in self.cache:
            t0 = time.perf_counter()
            self.cache[key] = evaluate(self.backend, items, scorer="exact_match")
            self.seconds[f"{cand.name}@{split}"] = round(time.perf_counter() - t0, 1)
        return self.cache[key]


def localisation_candidates(
    father: Path, mother: Path, mother_name: str, revived_layers: Sequence[int]
) -> list[Candidate]:
    """Where does the mother's breadth loss live? The mother with one part taken back
    from the father (scored on the FITNESS split only: a diagnosis, not a selection)."""
    from darwinmerge.merge import Recipe

    def linear(mother_rules: list[dict[str, Any]], name: str) -> Candidate:
        data = _linear_data(father, mother, mother_name, [*mother_rules, {"value": 1.0}])
        return Candidate(name, Recipe.parse(data, source="benchmarks/revival.py"))

    span = [[la, la] for la in revived_layers]
    norm = {"component": "norm", "filter": "post_attention_layernorm", "value": 0.0}
    out = [
        linear(
            [{"layers": sp, "value": 0.0} for sp in span], "mother, father's revived layers whole"
        ),
        linear([{"component": "experts", "value": 0.0}], "mother, father's routed experts (all)"),
        linear(
            [{"component": "router", "value": 0.0}, norm], "mother, father's routers + input norms"
        ),
        linear(
            [{"component": "moe", "value": 0.0}, norm],
            "mother, father's MoE blocks + input norms (all)",
        ),
    ]
    return out


def measure(
    zoo: Path,
    *,
    mother_name: str = "mother_collapsed",
    work: Path | None = None,
    grid: Sequence[tuple[float, float, float]] = DEFAULT_GRID,
    scales: Sequence[float] = DEFAULT_SCALES,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    threshold: float = 0.05,
    fit_limit: int | None = None,
    test_limit: int | None = None,
    batch_size: int = 32,
    bootstrap: int = 1000,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Everything of item 3 as one JSON-able dict (see the module docstring)."""
    import darwinmerge.zoo.tasks  # noqa: F401  (registers the zoo task source)
    from darwinmerge.evaluate import compare, load_tasks, stratified_subset

    torch.set_num_threads(1)
    zoo = zoo.resolve()
    work = work or Path(tempfile.mkdtemp(prefix="revival."))
    bench = Bench(
        zoo, mother_name, work=work, batch_size=batch_size, bootstrap=bootstrap,
        threshold=threshold, log=log,
    )  # fmt: skip
    scan_f, scan_m = bench.parent_scans()
    out: dict[str, Any] = {
        "zoo": str(zoo),
        "mother": mother_name,
        "threshold": threshold,
        "dead_table": dead_table(scan_f, scan_m, thresholds),
    }

    def items_of(split: str, limit: int | None) -> list[Any]:
        got = load_tasks(f"zoo:{zoo}", split=split)
        return stratified_subset(got, limit, seed=0) if limit else got

    fit, test = items_of("fitness", fit_limit), items_of("test", test_limit)
    F, M = bench.father_dir, bench.mother_dir
    rv = bench.revive_field()

    def rec(tr: float, tm: float, trest: float, **kw: Any) -> Any:
        return pair_recipe(F, M, mother_name, t_router=tr, t_moe=tm, t_rest=trest, **kw)

    father = Candidate("father", rec(0.0, 0.0, 0.0))
    mother = Candidate("mother", rec(1.0, 1.0, 1.0))
    mother_rv = Candidate("mother+revive", rec(1.0, 1.0, 1.0, revive=rv))

    # -- selection on the FITNESS split: the best merge without revival
    fitness: dict[str, dict[str, Any]] = {}
    grid_c = [Candidate(f"merge r{a:g} moe{b:g} rest{c:g}", rec(a, b, c)) for a, b, c in grid]
    for cand in [father, mother, *grid_c]:
        res = bench.score(cand, "fitness", fit)
        fitness[cand.name] = {"overall": res.overall.score, "hash": bench.hashes[cand.name][:12]}
        log(f"fitness {cand.name:28s} {res.overall.score:.3f}")
    best = max(grid_c, key=lambda c: fitness[c.name]["overall"])  # first wins a tie
    a, b, c = grid[grid_c.index(best)]
    best_rv = Candidate(f"{best.name} +revive", rec(a, b, c, revive=rv))

    # -- revival variants, all with revival on, over the mother and over the best merge
    dead_layers = sorted({int(r["layer"]) for r in out["dead_table"] if r["mother"]["dead"]})

    def variants(base: tuple[float, float, float], tag: str, plain: Candidate) -> list[Candidate]:
        vs = [plain]
        vs += [
            Candidate(f"{tag} +revive rows x{k:g}", rec(*base, revive=rv), edit_scale(k))
            for k in scales
        ]
        vs.append(
            Candidate(f"{tag} +revive rows norm-matched", rec(*base, revive=rv), edit_norm_match)
        )
        vs.append(
            Candidate(f"{tag} +revive rows + mother's shift", rec(*base, revive=rv), edit_offset)
        )
        if dead_layers:
            vs.append(
                Candidate(
                    f"{tag} +revive, router of those layers from father",
                    rec(*base, revive=rv, router_from_father=dead_layers),
                )
            )
            vs.append(
                Candidate(
                    f"{tag} +revive, router + its input norm of those layers from father",
                    rec(
                        *base,
                        revive=rv,
                        router_from_father=dead_layers,
                        norm_from_father=dead_layers,
                    ),
                )
            )
        vs += [
            Candidate(f"{tag} +revive at {th:g}", rec(*base, revive=bench.revive_field(th)))
            for th in thresholds
        ]
        return vs

    var_m = variants((1.0, 1.0, 1.0), "mother", mother_rv)
    var_b = variants((a, b, c), best.name, best_rv)
    for cand in [*var_m, *var_b]:
        res = bench.score(cand, "fitness", fit)
        fitness[cand.name] = {"overall": res.overall.score, "hash": bench.hashes[cand.name][:12]}
        log(f"fitness {cand.name:28s} {res.overall.score:.3f}")
    keep_m = max(var_m, key=lambda c: fitness[c.name]["overall"])  # first wins a tie
    keep_b = max(var_b, key=lambda c: fitness[c.name]["overall"])
    diagnosis = {}
    for cand in localisation_candidates(F, M, mother_name, dead_layers):
        res = bench.score(cand, "fitness", fit)
        diagnosis[cand.name] = result_payload(res)["table"]
        log(f"fitness {cand.name:28s} {res.overall.score:.3f}")
    out["diagnosis_fitness"] = diagnosis
    out["fitness"] = {
        "n": len(fit),
        "scores": fitness,
        "best_merge": best.name,
        "kept_variant_mother": keep_m.name,
        "kept_variant_merge": keep_b.name,
    }

    # -- the TEST split: item 3's four models, the father, then every variant (chosen
    #    above on the fitness split; the test rows of the others are for the record)
    models = list(dict.fromkeys([mother, mother_rv, best, best_rv, father, *var_m, *var_b]))
    results = {}
    for m in models:
        results[m.name] = bench.score(m, "test", test)
        log(f"test    {m.name:28s} {results[m.name].overall.score:.3f}")
    out["test"] = {
        "n": len(test),
        "item3": [mother.name, mother_rv.name, best.name, best_rv.name],
        "models": {k: result_payload(r) for k, r in results.items()},
        "compare": {
            f"{k} vs {ref}": compare(results[k], results[ref], name_a=k, name_b=ref).to_dict()
            for k in results
            for ref in ("mother", "father", *([best.name] if k in {v.name for v in var_b} else []))
            if k != ref
        },
    }
    # -- revived experts: does the child's router ever pick them?
    util: dict[str, Any] = {}
    for cand in models:
        if not cand.revived:
            continue
        bench.realise(cand)
        child_scan = bench.scan(bench.child, cand.name)
        util[cand.name] = {
            "slots": {str(k): v for k, v in cand.revived.items()},
            "child": slot_utilisation(child_scan, cand.revived),
            "mother": slot_utilisation(scan_m, cand.revived),
            "father": slot_utilisation(scan_f, cand.revived),
            "child_dead_fraction": [float(x) for x in child_scan.dead_fraction],
        }
    out["revived"] = util
    out["seconds"] = bench.seconds
    out["work"] = str(work)
    return out


# ------------------------------------------------------------------------- printing
def _fmt(s: dict[str, float]) -> str:
    return f"{s['score']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def print_report(out: dict[str, Any], write: Callable[[str], None] = print) -> None:
    write(f"\nDead experts per sparse layer (utilisation < {out['threshold']} x fair share; "
          "95% bootstrap interval over probes)")  # fmt: skip
    write(f"{'layer':>5}  {'father':>28}  {'mother':>28}  mother's dead experts")
    for r in out["dead_table"]:
        f, m = r["father"], r["mother"]
        fi, mi = f["interval"], m["interval"]
        write(
            f"{r['layer']:>5}  {f['dead_fraction']:6.3f} [{fi[0]:.3f}, {fi[1]:.3f}]"
            f"          {m['dead_fraction']:6.3f} [{mi[0]:.3f}, {mi[1]:.3f}]          {m['dead']}"
        )
    fit = out["fitness"]
    write(f"\nFITNESS split (n = {fit['n']}), overall macro accuracy")
    for name, v in fit["scores"].items():
        write(f"  {name:52s} {v['overall']:.3f}  (child {v['hash']})")
    write(f"  best merge without revival: {fit['best_merge']}; kept variants: "
          f"{fit['kept_variant_mother']!r}, {fit['kept_variant_merge']!r}")  # fmt: skip
    write("\nWhere the mother's loss lives (FITNESS split, overall and per category)")
    for name, t in out.get("diagnosis_fitness", {}).items():
        cells = " ".join(f"{c[:5]} {v['score']:.3f}" for c, v in t.items())
        write(f"  {name:52s} {cells}")
    test = out["test"]
    models = test["models"]
    cats = list(next(iter(models.values()))["table"])
    write(f"\nTEST split (n = {test['n']}), exact match, Wilson 95% intervals")
    write(f"{'model':52s}" + "".join(f"{c:>24s}" for c in cats))
    for name, p in models.items():
        write(f"{name:52s}" + "".join(f"{_fmt(p['table'][c]):>24s}" for c in cats))
    write(
        "\nPaired tests on the test split (diff, p: McNemar per category, stratified sign overall)"
    )
    shown = {*test["item3"], fit["kept_variant_mother"], fit["kept_variant_merge"]}
    for key, comp in test["compare"].items():
        if key.split(" vs ")[0] not in shown:
            continue
        cells = [f"{c} {r['diff']:+.3f} (p={r['p_value']:.2g})" for c, r in comp["rows"].items()]
        write(f"  {key}: " + "; ".join(cells))
    write("\nUtilisation of the revived slots on the probes (1 = fair share): in the child, "
          "and the same slots in the mother and the father")  # fmt: skip
    for name, u in out["revived"].items():
        ch, mo, fa = u["child"], u["mother"], u["father"]
        write(
            f"  {name:52s} n={ch['n']:2d} child mean {ch['mean']:.3f} min {ch['min']:.3f} "
            f"any token {ch['share_any_token']:.2f} alive {ch['share_alive']:.2f} | "
            f"mother mean {mo['mean']:.3f} | father mean {fa['mean']:.3f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=Path("runs/zoo"))
    parser.add_argument("--mother", default="mother_collapsed")
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--fit-limit", type=int, default=None, help="items per category")
    parser.add_argument("--test-limit", type=int, default=None, help="items per category")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=None, help="scans go here")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    out = measure(
        args.zoo, mother_name=args.mother, work=args.work, threshold=args.threshold,
        fit_limit=args.fit_limit, test_limit=args.test_limit, bootstrap=args.bootstrap,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )  # fmt: skip
    out["total_seconds"] = round(time.perf_counter() - t0, 1)
    print_report(out)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1, allow_nan=True) + "\n", encoding="utf-8")
        print(f"\nwritten {args.out}")
    if any(math.isnan(r["father"]["dead_fraction"]) for r in out["dead_table"]):
        print("warning: NaN dead fractions", file=sys.stderr)


if __name__ == "__main__":
    main()

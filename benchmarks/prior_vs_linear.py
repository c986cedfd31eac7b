"""Phase 1 without search: the MRI prior's own child against the plain 50/50 merge.

On the demo zoo (``runs/zoo``, ``darwin zoo build``): scan the parents
(``darwin mri compare``; reused from ``--mri`` when it holds a comparison), build the
``seed`` and ``layerwise`` genome spaces, take each prior's mean genome, merge it, and
score it on the zoo's FITNESS split next to the parents, the uniform 50/50 linear merge
and the hand-made ``moe-from-mother`` recipe. Prints one table (per category and overall)
and the paired comparison of each prior child against the 50/50 merge.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prior_vs_linear.py --zoo runs/zoo
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _scans(zoo: Path, mri: Path) -> tuple[Any, Any, Any]:
    from darwinmerge.mri import ComparisonScan, MriConfig, Scan, compare_models

    if not (mri / "comparison.json").is_file():
        cfg = MriConfig(probes=(f"zoo@{zoo}",))
        compare_models(zoo / "father", zoo / "mother", cfg, base=zoo / "base").save(mri)
    return ComparisonScan.load(mri), Scan.load(mri, "scan_a"), Scan.load(mri, "scan_b")


def _prior_recipes(zoo: Path, mri: Path, target: str | None) -> dict[str, Any]:
    from darwinmerge.evolve import SpaceContext, build_space, mri_prior, parse_space_config

    comparison, scan_a, scan_b = _scans(zoo, mri)
    ctx = SpaceContext.from_parents(
        {"father": zoo / "father", "mother": zoo / "mother"},
        base=zoo / "base",
        donor="father",
        scans={"father": mri / "scan_a.json", "mother": mri / "scan_b.json"},
    )
    out = {}
    for kind in ("seed", "layerwise"):
        space = build_space(parse_space_config({"kind": kind}), ctx)
        prior = mri_prior(space, comparison, scan_a, scan_b, target=target)
        print(f"prior child ({kind}): {space.describe(prior.mean)}")
        out[f"prior-{kind}"] = space.decode(prior.mean)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=Path("runs/zoo"))
    parser.add_argument("--mri", type=Path, default=None, help="darwin mri compare folder")
    parser.add_argument("--split", default="fitness")
    parser.add_argument("--target", default=None, help="probe category the prior favours")
    parser.add_argument("--limit", type=int, default=None, help="items per category")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import darwinmerge.zoo.tasks  # noqa: F401  (registers the zoo task source)
    from darwinmerge.evaluate import compare, evaluate, load_tasks, make_backend
    from darwinmerge.merge import merge_to_disk
    from darwinmerge.zoo.recipes import UNIFORM_HALF, WINNING, to_recipe

    zoo = args.zoo.resolve()
    work = Path(tempfile.mkdtemp(prefix="prior_vs_linear."))
    mri = args.mri or work / "mri"
    recipes: dict[str, Any] = {
        "linear-50/50": to_recipe(UNIFORM_HALF, zoo / "father", zoo / "mother"),
        "moe-from-mother": to_recipe(WINNING, zoo / "father", zoo / "mother"),
        **_prior_recipes(zoo, mri, args.target),
    }
    models: dict[str, Path] = {"father": zoo / "father", "mother": zoo / "mother"}
    for name, recipe in recipes.items():
        out = work / name.replace("/", "_")
        merge_to_disk(recipe, out)
        models[name] = out
    items = load_tasks(f"zoo:{zoo}", split=args.split)
    if args.limit:
        seen: dict[str, int] = {}
        items = [it for it in items if seen.setdefault(it.category, 0) < args.limit
                 and not seen.update({it.category: seen[it.category] + 1})]  # fmt: skip
    results = {}
    for name, path in models.items():
        t0 = time.perf_counter()
        backend = make_backend("transformers", str(path), batch_size=32, max_new_tokens=32)
        results[name] = evaluate(backend, items, scorer="exact_match")
        print(f"scored {name} in {time.perf_counter() - t0:.0f} s")
    cats = list(next(iter(results.values())).table())
    print(f"\n{args.split} split, exact match (n = {len(items)})")
    print(f"{'model':18s}" + "".join(f"{c[:12]:>13s}" for c in cats))
    for name, res in results.items():
        print(f"{name:18s}" + "".join(f"{res.table()[c].score:13.3f}" for c in cats))
    for name in ("prior-seed", "prior-layerwise", "moe-from-mother"):
        comp = compare(results[name], results["linear-50/50"], name_a=name, name_b="linear")
        row = comp.rows["overall"]
        print(f"{name} vs linear-50/50: {row.diff:+.3f} overall (p = {row.p_value:.3g}, "
              f"{row.verdict})")  # fmt: skip
    print(f"(children and scans in {work})")


if __name__ == "__main__":
    main()

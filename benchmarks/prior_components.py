"""Does the per-component swap evidence improve the prior's own child? Same build, same scans.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prior_components.py \\
        --zoo runs/zoo --suite runs/suite --out runs/ss9 [--problems attn_vs_experts,...]

For every problem of the merge-problem suite, the MRI prior's start recipe (the child the
``prior`` arm of ``benchmarks/search_suite.py`` returns, no evaluation at all) is built
twice from the same comparison: with the attention-alone / FFN-alone swaps
(``layers+parts``, the default scan) and with them removed (``layers``, the prior before
them: attention and FFN follow their block). Both children are scored on the zoo's test
split; the table gives both scores, the difference and an exact paired test on the items
one child gets right and the other wrong. The scans are the search suite's own
(``OUT/<problem>/mri``, computed there when missing), so this reads the same evidence the
guided arm started from.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any


def _search_suite() -> Any:
    path = Path(__file__).resolve().parent / "search_suite.py"
    spec = importlib.util.spec_from_file_location("search_suite", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def layers_only(scans: Path, out: Path) -> Path:
    """A copy of a ``darwin mri compare`` folder without its component swaps."""
    import dataclasses
    import shutil

    from darwinmerge.mri import ComparisonScan

    out.mkdir(parents=True, exist_ok=True)
    for f in scans.iterdir():
        if f.is_file() and not f.name.startswith("comparison."):
            shutil.copy2(f, out / f.name)
    cmp = ComparisonScan.load(scans)
    parts = {
        f.name: None for f in dataclasses.fields(cmp) if f.name.endswith(("_attention", "_ffn"))
    }
    dataclasses.replace(cmp, **parts).save(out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--zoo", type=Path, default=Path("runs/zoo"))
    ap.add_argument("--suite", type=Path, default=Path("runs/suite"))
    ap.add_argument("--out", type=Path, default=Path("runs/search_suite"))
    ap.add_argument("--problems", type=lambda s: s.split(","), default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    ss = _search_suite()
    import torch

    from darwinmerge.zoo.problems import PROBLEMS, problem_parents

    torch.set_num_threads(1)
    sargs = ss.parse(["--zoo", str(args.zoo), "--suite", str(args.suite), "--out", str(args.out)])
    names = args.problems or [p.name for p in PROBLEMS.values()]
    rows = []
    tasks, test_items = ss._fitness_tasks(args.zoo, args.out)
    for name in names:
        paths = problem_parents(args.suite, name)
        work = args.out / name
        scans = ss._scans(args.zoo, paths, work)
        judge = ss.Judge(paths, test_items, sargs)
        got = {}
        for kind, folder in (
            ("layers", layers_only(scans, work / "mri_layers_only")),
            ("layers+parts", scans),
        ):
            cfg = ss._config(sargs, paths, tasks, "guided", 0, folder, 40, 0)
            got[kind] = judge.score(ss.start_yaml(cfg))
        old, new = got["layers"], got["layers+parts"]
        wins = sum(new["correct"][i] and not old["correct"][i] for i in old["correct"])
        losses = sum(old["correct"][i] and not new["correct"][i] for i in old["correct"])
        rows.append(
            {
                "problem": name,
                "layers": old["overall"],
                "layers+parts": new["overall"],
                "diff": new["overall"] - old["overall"],
                "wins": wins,
                "losses": losses,
                "p": ss.paired_p(wins, losses),
            }
        )
        r = rows[-1]
        print(
            f"{name:16s} layers {r['layers']:.3f}  layers+parts {r['layers+parts']:.3f}  "
            f"{r['diff']:+.3f}  {wins}/{losses} p={r['p']:.2g}",
            flush=True,
        )
    print("\n| problem | prior start, layer swaps only | with component swaps | diff | w / l, p |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['problem']} | {r['layers']:.3f} | {r['layers+parts']:.3f} | {r['diff']:+.3f} | "
            f"{r['wins']} / {r['losses']}, p = {r['p']:.2g} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

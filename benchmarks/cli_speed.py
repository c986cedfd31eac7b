"""How fast the ``darwin`` command answers when it has nothing heavy to do.

Best of ``--repeat`` wall times, each a fresh process, against ``python -c pass`` and
``python -c "import torch"`` measured in the same run. Target (issue 10): ``darwin --help``
under 0.5 s; ``darwin validate --no-check-parents`` (a recipe, an evolve config, a run
config: the shipped examples) imports no torch, so it answers in about the time of --help.

    .venv/bin/python benchmarks/cli_speed.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DARWIN = str(Path(sys.executable).with_name("darwin"))
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _best(cmd: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "r.yaml"
        recipe.write_text(
            "parents:\n  - {name: a, path: /nowhere/a}\n  - {name: b, path: /nowhere/b}\n"
            "method: slerp\nparameters: {t: 0.5}\n"
        )
        rows = [
            ("python -c pass (reference)", [sys.executable, "-c", "pass"]),
            ("python -c 'import torch' (reference)", [sys.executable, "-c", "import torch"]),
            ("darwin --help", [DARWIN, "--help"]),
            ("darwin merge --help", [DARWIN, "merge", "--help"]),
            ("darwin merge (usage error)", [DARWIN, "merge"]),
            (
                "darwin validate --no-check-parents",
                [DARWIN, "validate", str(recipe), "--no-check-parents"],
            ),
        ]
        for example in ("seed-recipe.yaml", "zoo-evolve.yaml", "seed-run.yaml"):
            cmd = [DARWIN, "validate", str(EXAMPLES / example), "--no-check-parents"]
            rows.append((f"  same, examples/{example}", cmd))
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        print(f"cli speed: best of {args.repeat}; load average at start {load}")
        for what, cmd in rows:
            wall = _best(cmd, args.repeat)
            verdict = ""
            if what == "darwin --help":
                verdict = f"  target < 0.5 s: {'ok' if wall < 0.5 else 'FAIL'}"
            print(f"{what:40} {wall:6.2f} s{verdict}")


if __name__ == "__main__":
    main()

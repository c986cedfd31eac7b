"""Run several mergekit configs in one process (mergekit's own merge pipeline).

Run with the mergekit venv (``make mergekit-venv``), never the project venv::

    .venv-mergekit/bin/python tools/mergekit_run.py JOBS.json

JOBS is a JSON list of ``[config.yaml, out_dir]`` pairs. Used by
tests/merge/test_mergekit_e2e.py and test_stacking.py to compare ``darwin merge`` with
mergekit end to end. A job that raises leaves ``out_dir.error`` with the exception (the
tests decide whether that is expected) and the others still run.
"""

from __future__ import annotations

import json
import sys

import yaml


def main() -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    jobs = json.loads(open(sys.argv[1]).read())
    for config_path, out_dir in jobs:
        with open(config_path) as fh:
            config = MergeConfiguration.model_validate(yaml.safe_load(fh))
        try:
            run_merge(
                config,
                out_dir,
                options=MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False),
            )
        except Exception as exc:  # noqa: BLE001 - recorded for the test to judge
            # mergekit 0.1.5 writes a stacked model's tensors, then fails on its config
            with open(out_dir + ".error", "w") as fh:
                fh.write(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()

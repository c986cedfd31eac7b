"""Evaluation and the MRI sit below the merge engine: importing every module of
``darwinmerge.evaluate`` and ``darwinmerge.mri`` loads none of the engine's modules (they
write weights into a resident model with ``darwinmerge.checkpoint.write_into_model``)."""

from __future__ import annotations

import json
import subprocess
import sys

ENGINE = (
    "darwinmerge.merge.executor",
    "darwinmerge.merge.planner",
    "darwinmerge.merge.resident",
    "darwinmerge.merge.api",
    "darwinmerge.merge.ops",
)

PROBE = """
import importlib, json, pkgutil, sys
import darwinmerge.evaluate, darwinmerge.mri
names = []
for pkg in (darwinmerge.evaluate, darwinmerge.mri):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
        names.append(info.name)
print(json.dumps({"imported": names, "loaded": sorted(sys.modules)}))
"""


def test_evaluate_and_mri_do_not_import_the_merge_engine():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=300
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    imported = set(report["imported"])
    # the scan is not vacuous: it imported the modules that write weights into models
    assert {
        "darwinmerge.evaluate.backends.transformers_backend",
        "darwinmerge.mri.compare",
    } <= imported
    assert "darwinmerge.checkpoint.model_writer" in report["loaded"]
    engine = [m for m in report["loaded"] if m.startswith(ENGINE)]
    assert engine == [], engine

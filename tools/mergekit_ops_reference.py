"""Reference outputs from mergekit's own merge-method implementations.

Run with the mergekit venv (``make mergekit-venv``), not the project venv::

    .venv-mergekit/bin/python tools/mergekit_ops_reference.py \
        INPUTS.safetensors CASES.json OUT.safetensors

INPUTS holds named tensors. CASES is a JSON list of objects
``{"id", "method", "inputs": [names], "base": name | null, "model_params": [{...}],
"params": {...}, "seed": int | null}``; ``model_params`` are mergekit's per-input
parameters of the non-base inputs (``weight``, ``density``, ``gamma``, ``epsilon``),
``params`` its shared ones (``t``, ``normalize``, ``rescale``, ``lambda``). For a random
method ``seed`` seeds torch's global RNG right before the call (mergekit draws from it).
OUT gets one tensor per case id. tests/merge_ops/test_mergekit_parity.py drives this.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def run_case(case: dict[str, Any], tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import TensorGroup

    method = registry.get(case["method"])
    inputs = [tensors[name] for name in case["inputs"]]
    parameters: dict[str, Any] = dict(case.get("params", {}))
    if case.get("base") is not None:
        # task-vector methods: base first, then the models
        group = TensorGroup.from_tensors([tensors[case["base"]], *inputs], base_index=0)
    elif case["method"] == "slerp":
        # mergekit's slerp interpolates from its base (t=0) to the other input (t=1)
        group = TensorGroup.from_tensors(inputs, base_index=0)
    else:
        group = TensorGroup.from_tensors(inputs)
    keys = {key for params in case.get("model_params", []) for key in params}
    for key in sorted(keys):
        parameters[key] = [params[key] for params in case["model_params"]]
    if case.get("seed") is not None:
        torch.manual_seed(int(case["seed"]))
    (result,) = method([group], parameters=parameters)
    return result.contiguous()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    tensors = load_file(argv[0])
    with open(argv[1], encoding="utf-8") as handle:
        cases = json.load(handle)
    torch.set_num_threads(1)
    outputs = {case["id"]: run_case(case, tensors) for case in cases}
    save_file(outputs, argv[2])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

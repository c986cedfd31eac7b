"""The continuous scorers: the gold continuation's log-probability from one forward pass
equals a hand-computed one on a tiny model; targets in JSONL; zoo items carry them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from darwinmerge.errors import EvaluationError
from darwinmerge.evaluate import (
    TaskItem,
    TransformersBackend,
    category_values,
    evaluate,
    load_jsonl,
    make_scorer,
)
from darwinmerge.zoo.tiny import tiny_model


def _hand_logprob(model: Any, tok: Any, prompt: str, gold: str) -> float:
    """log p(gold | prompt): one unpadded forward pass over prompt + gold, the gold
    tokens' log-softmax summed (the prompt's ids are a prefix of the joint ids here)."""
    ctx = tok(prompt)["input_ids"]
    whole = tok(prompt + gold)["input_ids"]
    assert whole[: len(ctx)] == ctx
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([whole])).logits[0].double()
    logp = logits.log_softmax(-1)
    return sum(float(logp[pos - 1, whole[pos]]) for pos in range(len(ctx), len(whole)))


def test_gold_logprob_equals_hand_computed(tok: Any) -> None:
    model = tiny_model(tok, seed=3)
    items = [
        TaskItem("a", "X", "calc 3+4\n", "7", target="3+4=7\nANSWER: 7"),
        TaskItem("b", "X", "code rev a b c\n", "c b a", target="rev 3 -> 3\nANSWER: c b a"),
        TaskItem("c", "Y", "logic P>Q first?\n", "P"),  # no target: scores the answer
    ]
    backend = TransformersBackend(model, tok, batch_size=2)  # padding within a batch
    result = evaluate(backend, items, scorer="gold_logprob")
    for it, got in zip(items, result.items, strict=True):
        want = _hand_logprob(model, tok, it.prompt, it.gold)
        assert got.value == pytest.approx(want, rel=1e-4)
        assert got.value < 0.0
        assert got.correct == (want > math.log(0.5))
    probs = evaluate(backend, items, scorer="gold_prob")
    for lp, p in zip(result.items, probs.items, strict=True):
        assert p.value == pytest.approx(math.exp(lp.value or 0.0), rel=1e-4)
    means = category_values(probs.items)
    assert means["X"][1] == 2 and means["Y"][1] == 1
    x_mean = ((probs.items[0].value or 0.0) + (probs.items[1].value or 0.0)) / 2
    assert means["X"][0] == pytest.approx(x_mean, rel=1e-9)


def test_category_values_refuses_generative_results(fake_backend_cls: Any) -> None:
    items = [TaskItem("a", "X", "q", "1")]
    res = evaluate(fake_backend_cls({"q": "ANSWER: 1"}), items, scorer="exact_match")
    with pytest.raises(EvaluationError, match="no continuous value"):
        category_values(res.items)


def test_target_round_trips_through_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rows = [
        {"id": "1", "category": "c", "prompt": "p", "answer": "a", "target": "t\nANSWER: a"},
        {"id": "2", "category": "c", "prompt": "p2", "answer": "b"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    items = load_jsonl(path)
    assert items[0].target == "t\nANSWER: a" and items[0].gold == "t\nANSWER: a"
    assert items[1].target is None and items[1].gold == "b"
    assert [it.to_dict() for it in items] == rows
    path.write_text(json.dumps({**rows[0], "target": 3}))
    with pytest.raises(EvaluationError, match="'target' must be a non-empty string"):
        load_jsonl(path)


def _hand_margin(model: Any, tok: Any, prompt: str, gold: str) -> float:
    """min over the gold tokens of log p(gold token) - log p(best other token)."""
    ctx = tok(prompt)["input_ids"]
    whole = tok(prompt + gold)["input_ids"]
    assert whole[: len(ctx)] == ctx
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([whole])).logits[0].double().log_softmax(-1)
    margins = []
    for pos in range(len(ctx), len(whole)):
        row = logp[pos - 1].clone()
        gold_lp = float(row[whole[pos]])
        row[whole[pos]] = -math.inf
        margins.append(gold_lp - float(row.max()))
    return min(margins)


def _greedy_items(tok: Any) -> tuple[Any, list[TaskItem]]:
    """Items whose target is a tiny random model's own greedy continuation, kept where
    the continuation's text encodes back to the very ids greedy decoding chose (a random
    model also writes byte fragments that do not), each with a twin whose last character
    is changed."""
    prompts = ["calc 3+4\n", "code rev a b c\n", "logic P>Q first?\n", "sum 1 2\n", "abc\n"]
    for seed in range(12):
        model = tiny_model(tok, seed=seed)
        items = []
        for i, p in enumerate(prompts):
            ctx = tok(p)["input_ids"]
            with torch.no_grad():
                ids = model.generate(
                    torch.tensor([ctx]), max_new_tokens=4, do_sample=False, pad_token_id=0
                )[0, len(ctx) :].tolist()
            text = tok.decode(ids)
            if len(text) < 2 or "\ufffd" in text or tok(p + text)["input_ids"] != ctx + ids:
                continue
            wrong = text[:-1] + ("b" if text[-1] != "b" else "c")
            items.append(TaskItem(f"own{i}", "X", p, "-", target=text))
            items.append(TaskItem(f"bad{i}", "Y", p, "-", target=wrong))
        if len(items) >= 4:
            return model, items
    raise AssertionError("no tiny model wrote two continuations that encode back")


def test_gold_margin_is_greedy_exact_match_without_generating(tok: Any) -> None:
    """The margin equals a hand-computed one; it is positive for the model's own greedy
    continuation (greedy writes it) and negative once one of its characters is changed."""
    model, items = _greedy_items(tok)
    backend = TransformersBackend(model, tok, batch_size=3)  # padding within a batch
    result = evaluate(backend, items, scorer="gold_margin")
    lps = evaluate(backend, items, scorer="gold_logprob")
    for it, got in zip(items, result.items, strict=True):
        m = _hand_margin(model, tok, it.prompt, it.gold)
        assert got.value == pytest.approx(1.0 / (1.0 + math.exp(-m)), rel=1e-4)  # temperature 1
        assert got.correct == it.id.startswith("own")
        assert (m > 0) == it.id.startswith("own")
    pairs = backend.gold_margins([(it.prompt, it.gold) for it in items])
    for (ll, _), lp in zip(pairs, lps.items, strict=True):
        assert ll == pytest.approx(lp.value, rel=1e-6)
    sharp = evaluate(backend, items, scorer=make_scorer("gold_margin", temperature=0.05))
    assert [r.correct for r in sharp.items] == [r.correct for r in result.items]
    for soft, hard in zip(result.items, sharp.items, strict=True):  # sharper: nearer 0 / 1
        assert abs((hard.value or 0.0) - 0.5) >= abs((soft.value or 0.0) - 0.5)
    with pytest.raises(EvaluationError, match="temperature must be > 0"):
        make_scorer("gold_margin", temperature=0.0)


def test_gold_margin_refuses_a_backend_without_token_logprobs(fake_backend_cls: Any) -> None:
    items = [TaskItem("a", "X", "q", "1")]
    with pytest.raises(EvaluationError, match="FakeBackend backend does not give"):
        evaluate(fake_backend_cls(logliks={("q", "1"): -1.0}), items, scorer="gold_margin")


class _ScriptedSGLang:
    """Answers ``engine.generate(input_ids=..., return_logprob=True, top_logprobs_num=2)``
    as SGLang does, from a transformers model's own logits: per position, the token's
    logprob and the top-2 as (logprob, token id, text); position 0 holds None."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def generate(self, input_ids: list[list[int]], **params: Any) -> list[dict]:
        assert params["top_logprobs_num"] == 2 and params["logprob_start_len"] == 0
        outs = []
        for ids in input_ids:
            with torch.no_grad():
                logp = self.model(input_ids=torch.tensor([ids])).logits[0].float()
            logp = logp.log_softmax(-1)
            tokens: list[Any] = [None]
            tops: list[Any] = [None]
            for pos in range(1, len(ids)):
                row = logp[pos - 1]
                tokens.append((float(row[ids[pos]]), ids[pos], None))
                best = row.topk(2)
                tops.append([(float(v), int(i), None) for v, i in zip(*best, strict=True)])
            meta = {"input_token_logprobs": tokens, "input_top_logprobs": tops}
            outs.append({"text": "", "meta_info": meta})
        return outs


def test_sglang_margins_read_its_top_logprobs_as_transformers_computes_them(tok: Any) -> None:
    from darwinmerge.evaluate.backends.sglang_backend import SGLangBackend

    model, items = _greedy_items(tok)
    backend = object.__new__(SGLangBackend)  # no engine process: a scripted one
    backend.engine = _ScriptedSGLang(model)
    backend.tokenizer = tok
    backend.usable = True
    requests = [(it.prompt, it.gold) for it in items]
    got = backend.gold_margins(requests)
    want = TransformersBackend(model, tok, batch_size=3).gold_margins(requests)
    for (gl, gm), (wl, wm) in zip(got, want, strict=True):
        assert gl == pytest.approx(wl, rel=1e-4)
        assert gm == pytest.approx(wm, rel=1e-4, abs=1e-5)
    assert [m > 0 for _, m in got] == [it.id.startswith("own") for it in items]

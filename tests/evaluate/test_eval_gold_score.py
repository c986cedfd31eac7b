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

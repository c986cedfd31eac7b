"""Scorers, evaluate() summaries and paired comparisons on scripted backends, and the
MC scorer on a tiny model trained to prefer the right choice."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from darwinmerge.errors import EvaluationError, UnknownNameError
from darwinmerge.evaluate import (
    ExactMatch,
    TaskItem,
    TransformersBackend,
    compare,
    evaluate,
    mcnemar_exact,
    stratified_sign_test,
    wilson_interval,
)
from darwinmerge.zoo.tiny import tiny_model


def _gen_items() -> tuple[list[TaskItem], dict[str, str]]:
    items = [TaskItem(f"r{i}", "REASONING", f"q{i}", str(i)) for i in range(4)]
    items += [TaskItem(f"c{i}", "CODE", f"code{i}", "abc") for i in range(2)]
    outputs = {
        "q0": "0 + 0\nANSWER: 0\n",
        "q1": "<think>ANSWER: 1</think>\nANSWER: 7",  # wrong: decoy in thinking
        "q2": "answer: 2.",  # right after normalisation
        "q3": "I do not know",  # no answer line
        "code0": "ANSWER:  ABC ",
        "code1": "ANSWER: abd",
    }
    return items, outputs


def test_exact_match_per_item_and_summary(fake_backend_cls: Any) -> None:
    items, outputs = _gen_items()
    backend = fake_backend_cls(generations=outputs)
    result = evaluate(backend, items, chunk_size=4)
    assert backend.calls == [4, 2]  # chunked
    assert [(r.id, r.extracted, r.correct) for r in result.items] == [
        ("r0", "0", True),
        ("r1", "7", False),
        ("r2", "2.", True),
        ("r3", None, False),
        ("c0", "ABC", True),
        ("c1", "abd", False),
    ]
    assert result.items[1].prediction == outputs["q1"]
    cats = result.categories
    assert list(cats) == ["CODE", "REASONING"]
    assert (cats["REASONING"].k, cats["REASONING"].n, cats["REASONING"].score) == (2, 4, 0.5)
    assert (cats["REASONING"].ci_low, cats["REASONING"].ci_high) == wilson_interval(2, 4)
    assert result.overall.score == pytest.approx((0.5 + 0.5) / 2)
    assert result.micro.score == pytest.approx(3 / 6) and result.micro.n == 6
    assert result.to_dict()["overall"]["n"] == 6


def test_macro_differs_from_micro(fake_backend_cls: Any) -> None:
    items = [TaskItem(f"a{i}", "A", f"a{i}", "1") for i in range(8)]
    items += [TaskItem(f"b{i}", "B", f"b{i}", "1") for i in range(2)]
    outputs = {f"a{i}": "ANSWER: 1" for i in range(8)} | {f"b{i}": "ANSWER: 0" for i in range(2)}
    result = evaluate(fake_backend_cls(generations=outputs), items)
    assert result.overall.score == pytest.approx(0.5)  # mean of 1.0 and 0.0
    assert result.micro.score == pytest.approx(0.8)


def test_custom_regex_scorer(fake_backend_cls: Any) -> None:
    items = [TaskItem("x", "K", "p", "42")]
    backend = fake_backend_cls(generations={"p": "so \\boxed{42} it is"})
    assert not evaluate(backend, items).items[0].correct
    assert evaluate(backend, items, scorer=ExactMatch(pattern=r"\\boxed\{(.*?)\}")).items[0].correct


def test_mc_scorer_picks_argmax_and_normalised_variant(fake_backend_cls: Any) -> None:
    items = [
        TaskItem("m0", "MC", "ctx0", " yes", (" no", " yes")),
        # summed picks the short choice, byte-normalised picks the long one
        TaskItem("m1", "MC", "ctx1", " a long answer", (" x", " a long answer")),
        TaskItem("m2", "MC", "ctx2", " b", (" a", " b")),  # tie -> first choice
    ]
    ll = {
        ("ctx0", " no"): -5.0,
        ("ctx0", " yes"): -1.0,
        ("ctx1", " x"): -2.0,
        ("ctx1", " a long answer"): -7.0,  # -0.5 per byte vs -1.0 per byte
        ("ctx2", " a"): -3.0,
        ("ctx2", " b"): -3.0,
    }
    backend = fake_backend_cls(logliks=ll)
    result = evaluate(backend, items, scorer="mc_loglik")
    assert backend.calls == [6]  # one batched call
    assert [r.prediction for r in result.items] == [" yes", " x", " a"]
    assert [r.correct for r in result.items] == [True, False, False]
    assert [r.correct_norm for r in result.items] == [True, True, False]
    assert result.items[1].loglikelihoods == (-2.0, -7.0)
    norm = result.normalised()
    assert norm is not None and norm.overall.score == pytest.approx(2 / 3)


def test_auto_scorer_and_errors(fake_backend_cls: Any) -> None:
    items = [
        TaskItem("g", "G", "p", "1"),
        TaskItem("m", "M", "c", " b", (" a", " b")),
    ]
    backend = fake_backend_cls({"p": "ANSWER: 1"}, {("c", " a"): -1.0, ("c", " b"): -2.0})
    result = evaluate(backend, items, scorer="auto")
    assert [r.id for r in result.items] == ["g", "m"]  # input order kept
    assert [r.correct for r in result.items] == [True, False]
    with pytest.raises(EvaluationError, match="needs 'choices'"):
        evaluate(backend, items, scorer="mc_loglik")
    with pytest.raises(UnknownNameError, match="did you mean 'exact_match'"):
        evaluate(backend, items, scorer="exact-match")
    with pytest.raises(EvaluationError, match="no items"):
        evaluate(backend, [])
    with pytest.raises(EvaluationError, match="duplicate item id"):
        evaluate(backend, [items[0], items[0]])


def test_compare_counts_pvalues_and_verdicts(fake_backend_cls: Any) -> None:
    # category R: 10 discordant, A wins 9 -> p = 0.0215 -> "A better"
    # category K: 2 discordant, 1 each -> inside the noise
    items = [TaskItem(f"r{i}", "R", f"r{i}", "1") for i in range(20)]
    items += [TaskItem(f"k{i}", "K", f"k{i}", "1") for i in range(20)]
    right, wrong = "ANSWER: 1", "ANSWER: 0"
    gen_a = {it.prompt: right for it in items}
    gen_b = dict(gen_a)
    for i in range(9):
        gen_b[f"r{i}"] = wrong
    gen_a["r9"] = wrong
    gen_a["k0"] = wrong
    gen_b["k1"] = wrong
    ra = evaluate(fake_backend_cls(gen_a), items)
    rb = evaluate(fake_backend_cls(gen_b), items)
    comp = compare(ra, rb, name_a="A", name_b="B")
    r = comp.rows["R"]
    assert (r.a_only, r.b_only, r.n) == (9, 1, 20)
    assert r.diff == pytest.approx(19 / 20 - 11 / 20)
    assert r.p_value == pytest.approx(0.021484375)
    assert r.verdict == "A better"
    k = comp.rows["K"]
    assert (k.a_only, k.b_only, k.p_value, k.verdict) == (1, 1, 1.0, "inside the noise")
    overall = comp.rows["overall"]
    assert (overall.a_only, overall.b_only) == (10, 2)
    assert overall.p_value == pytest.approx(mcnemar_exact(10, 2))  # equal category sizes
    assert overall.p_value == pytest.approx(stratified_sign_test([(9, 1, 20), (1, 1, 20)]))
    assert overall.verdict == "A better"  # p = 0.0386
    assert compare(rb, ra).rows["R"].verdict == "B better"
    with pytest.raises(EvaluationError, match="different items"):
        compare(ra, evaluate(fake_backend_cls(gen_a), items[:-1]))


def test_mc_on_model_trained_to_prefer_choice(tok: Any, trainer: Any) -> None:
    torch.manual_seed(0)
    items = [
        TaskItem("sky", "MC", "Q: the sky is blue or green? A:", " blue", (" green", " blue")),
        TaskItem("grass", "MC", "Q: the grass is blue or green? A:", " green", (" green", " blue")),
    ]
    swapped = [
        TaskItem(it.id, it.category, it.prompt, other, it.choices)
        for it, other in zip(items, (" green", " blue"), strict=True)
    ]
    model = tiny_model(tok, seed=3, init_std=0.02)
    trainer(model, tok, [it.prompt + it.answer for it in items])
    backend = TransformersBackend(model, tok, batch_size=4)
    result = evaluate(backend, items, scorer="mc_loglik")
    assert [r.correct for r in result.items] == [True, True]
    lls = [r.loglikelihoods for r in result.items]
    assert lls[0] is not None and lls[0][1] > lls[0][0] + 1.0  # clear margin for " blue"
    assert lls[1] is not None and lls[1][0] > lls[1][1] + 1.0
    # the same model marks the swapped answers wrong: the scorer follows the model
    assert [r.correct for r in evaluate(backend, swapped, scorer="mc_loglik").items] == [
        False,
        False,
    ]

"""Skill generators: seeded, stable ids, correct answers, no evaluation item trained on."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from darwinmerge.evaluate.tasks import TaskItem, split_of
from darwinmerge.zoo.skills import (
    CATEGORIES,
    GENERATORS,
    Doc,
    eval_items,
    make_world,
    training_docs,
)


def _recompute(world, item: dict[str, str]) -> str:  # noqa: ANN001
    """Solve a prompt from its text alone (independent of the generator code)."""
    p = item["prompt"]
    assert p.endswith("\n")
    words = p[:-1].split(" ")
    cat = item["category"]
    if cat == "reasoning":
        assert words[0] == "calc"
        expr = words[1]
        assert re.fullmatch(r"\d+([+-]\d+){2}", expr)
        return str(eval(expr))  # noqa: S307 - digits and +/- only, checked above
    if cat in ("code", "multilingual"):
        if cat == "code":
            assert words[0] == "code"
            op, letters = words[1], words[2:]
        else:
            lang = next(lg for lg in world.languages if lg.name == words[0])
            op = next(k for k, v in lang.words.items() if v == words[1])
            letters = words[2:]
            assert set(letters) <= set(lang.alphabet)
        if op == "rev":
            return " ".join(letters[::-1])
        if op == "sort":
            return " ".join(sorted(letters))
        assert op == "dedup"
        out: list[str] = []
        for ch in letters:
            if ch not in out:
                out.append(ch)
        return " ".join(out)
    if cat == "logic":
        facts, question = words[1:-1], words[-1]
        above = {a: b for a, b in (f.split(">") for f in facts)}
        below = {b: a for a, b in above.items()}
        top = next(a for a in above if a not in below)
        order = [top]
        while order[-1] in above:
            order.append(above[order[-1]])
        if question == "first?":
            return order[0]
        if question == "last?":
            return order[-1]
        x, y = question[:-1].split(">")
        return "yes" if order.index(x) < order.index(y) else "no"
    assert cat == "knowledge"
    _, rel, _, ent = words
    return next(v for e, r, v in world.facts if e == ent and r == rel)


@pytest.mark.parametrize("category", CATEGORIES)
def test_items_seeded_stable_and_correct(category: str) -> None:
    world = make_world(7, n_facts=120)
    items = eval_items(world, category, 120)
    again = eval_items(make_world(7, n_facts=120), category, 120)
    assert items == again
    assert [it["id"] for it in items] == [f"{category}-{k:04d}" for k in range(120)]
    assert len({it["prompt"] for it in items}) == 120
    for it in items:
        TaskItem(**it)  # the evaluation's item type accepts it
        assert it["category"] == category
        assert _recompute(world, it) == it["answer"], it
    # both splits present, in roughly equal parts
    n_test = sum(split_of(it["id"]) == "test" for it in items)
    assert 30 < n_test < 90
    # another seed gives other items
    other = eval_items(make_world(8, n_facts=120), category, 120)
    assert [it["prompt"] for it in other] != [it["prompt"] for it in items]


def test_documents_end_with_answer_line_and_are_correct() -> None:
    world = make_world(3, n_facts=60)
    rng = random.Random(0)
    for cat, gen in GENERATORS.items():
        for _ in range(200):
            doc = gen(rng, world)
            assert isinstance(doc, Doc) and doc.category == cat
            lines = doc.completion.split("\n")
            assert lines[-1] == f"ANSWER: {doc.answer}"
            assert doc.text == doc.prompt + doc.completion
            item = {"category": cat, "prompt": doc.prompt, "answer": doc.answer}
            assert _recompute(world, item) == doc.answer
            if cat == "reasoning":  # trace steps are true equations chaining to the answer
                for step in lines[:-1]:
                    lhs, rhs = step.split("=")
                    assert eval(lhs) == int(rhs) and 0 <= int(rhs) <= 99  # noqa: S307
                assert lines[-2].endswith(f"={doc.answer}")


def test_training_stream_never_contains_held_out_prompts() -> None:
    world = make_world(0, n_facts=50)
    held = {it["prompt"] for c in CATEGORIES for it in eval_items(world, c, 50)}
    mix = {c: 1.0 for c in CATEGORIES}
    docs = list(itertools.islice(training_docs(world, mix, stream_seed=1, held_out=held), 3000))
    seen = {c: 0 for c in CATEGORIES}
    for d in docs:
        seen[d.category] += 1
        if d.category != "knowledge":
            assert d.prompt not in held
    assert all(n > 400 for n in seen.values())  # every category is drawn
    # the filter really removes prompts the stream draws: hold out the first 100 prompts
    # of the unfiltered stream; the filtered stream of the same seed then skips them all
    plain = list(itertools.islice(training_docs(world, mix, stream_seed=1, held_out=set()), 300))
    drawn = {d.prompt for d in plain[:100] if d.category != "knowledge"}
    filtered = list(itertools.islice(training_docs(world, mix, stream_seed=1, held_out=drawn), 300))
    assert len(drawn) > 50
    assert not any(d.prompt in drawn for d in filtered if d.category != "knowledge")
    # knowledge is the exception: its facts are the training data
    assert any(d.prompt in held for d in docs if d.category == "knowledge")
    # the stream is seeded
    again = list(itertools.islice(training_docs(world, mix, stream_seed=1, held_out=held), 3000))
    assert again == docs
    other = list(itertools.islice(training_docs(world, mix, stream_seed=2, held_out=held), 50))
    assert other != docs[:50]


def test_mix_rejects_unknown_category() -> None:
    world = make_world(0, n_facts=10)
    with pytest.raises(ValueError, match="unknown categories"):
        next(training_docs(world, {"poetry": 1.0}, stream_seed=0, held_out=set()))

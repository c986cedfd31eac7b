"""The zoo's MRI probes never repeat a test-split evaluation item (the MRI feeds the
search's prior, and the search must never see the test split)."""

from __future__ import annotations

import pytest

from darwinmerge.evaluate.tasks import split_of
from darwinmerge.zoo import skills
from darwinmerge.zoo.probes import PROBE_SAFE_TEST_FRACTION, zoo_probe_set


@pytest.mark.parametrize("fraction", [0.5, PROBE_SAFE_TEST_FRACTION])
def test_no_probe_is_a_test_item(fraction: float) -> None:
    probes = zoo_probe_set(0)
    world = skills.make_world(0, n_facts=300)
    test_prompts = {
        it["prompt"]
        for cat in skills.CATEGORIES
        for it in skills.eval_items(world, cat, 300)
        if split_of(it["id"], test_fraction=fraction) == "test"
    }
    seen = 0
    for cat, texts in probes.texts.items():
        for text, chars in zip(texts, probes.prompt_chars[cat], strict=True):
            if chars:
                seen += 1
                assert text[:chars] not in test_prompts, (cat, text[:chars])
    assert seen == 5 * 16  # every zoo skill still has its 16 probes
    # the knowledge facts are all evaluation items: without the rule the probes had some
    knowledge = {it["prompt"] for it in skills.eval_items(world, "knowledge", 300)}
    assert any(
        text[:chars] in knowledge
        for text, chars in zip(
            probes.texts["KNOWLEDGE"], probes.prompt_chars["KNOWLEDGE"], strict=True
        )
    )

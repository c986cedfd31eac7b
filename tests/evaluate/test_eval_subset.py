"""Seeded stratified subsets and chunked evaluation with a stop callback."""

from __future__ import annotations

import pytest

from darwinmerge.errors import ConfigError
from darwinmerge.evaluate import ChunkReport, TaskItem, evaluate, stratified_subset


def _items(sizes: dict[str, int]) -> list[TaskItem]:
    return [
        TaskItem(id=f"{c}-{i}", category=c, prompt=f"{c} {i} =", answer=str(i))
        for c, n in sizes.items()
        for i in range(n)
    ]


def test_subset_sizes_per_category_and_seeded():
    items = _items({"a": 40, "b": 10, "c": 3})
    sub = stratified_subset(items, 5, seed=1)
    counts = {c: sum(it.category == c for it in sub) for c in "abc"}
    assert counts == {"a": 5, "b": 5, "c": 3}
    frac = stratified_subset(items, 0.25, seed=1)
    assert {c: sum(it.category == c for it in frac) for c in "abc"} == {"a": 10, "b": 2, "c": 1}
    # same seed: same subset whatever the input order; other seed: another subset
    assert stratified_subset(list(reversed(items)), 5, seed=1) == sub
    assert {it.id for it in stratified_subset(items, 5, seed=2)} != {it.id for it in sub}
    # a smaller subset of one seed is contained in a larger one (per category prefix)
    small = {it.id for it in stratified_subset(items, 3, seed=1)}
    assert small <= {it.id for it in sub}


def test_subset_prefixes_are_stratified():
    items = _items({"a": 30, "b": 30, "c": 60})
    sub = stratified_subset(items, 1.0, seed=0)
    assert len(sub) == 120
    for prefix in (12, 24, 60):
        counts = {c: sum(it.category == c for it in sub[:prefix]) for c in "abc"}
        # c has twice the items: it takes half of every prefix, a and b a quarter (+-1)
        assert abs(counts["c"] - prefix / 2) <= 1
        assert abs(counts["a"] - prefix / 4) <= 1 and abs(counts["b"] - prefix / 4) <= 1


@pytest.mark.parametrize("bad", [0, -2, 0.0, 1.5, True])
def test_subset_bad_sizes(bad):
    with pytest.raises(ConfigError):
        stratified_subset(_items({"a": 3}), bad, seed=0)


def test_chunk_callback_sees_partial_results_and_can_stop(fake_backend_cls):
    items = stratified_subset(_items({"a": 8, "b": 8}), 1.0, seed=0)
    # the backend answers right for category a, wrong for b
    gens = {it.prompt: f"ANSWER: {it.answer if it.category == 'a' else 'x'}\n" for it in items}
    backend = fake_backend_cls(generations=gens)
    reports: list[ChunkReport] = []

    def stop_after_two(report: ChunkReport) -> bool:
        reports.append(report)
        return report.chunk < 1

    result = evaluate(backend, items, chunk_size=4, on_chunk=stop_after_two)
    assert result.stopped and result.n == 8 and result.n_planned == 16
    assert backend.calls == [4, 4]
    assert [r.done for r in reports] == [4, 8]
    last = reports[-1]
    assert last.categories["a"].score == 1.0 and last.categories["b"].score == 0.0
    assert last.planned == {"a": 8, "b": 8} and last.remaining == {"a": 4, "b": 4}
    assert [it.id for it in result.items] == [it.id for it in items[:8]]

    # a callback that never says stop sees every chunk; the result is complete
    seen: list[int] = []
    full = evaluate(
        fake_backend_cls(generations=gens),
        items,
        chunk_size=5,
        on_chunk=lambda r: seen.append(r.done) is None,
    )
    assert not full.stopped and full.n == 16 and seen == [5, 10, 15, 16]
    assert full.categories["a"].score == 1.0 and full.overall.score == 0.5

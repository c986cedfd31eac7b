"""Task items: the deterministic split, JSONL parsing errors, task specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from darwinmerge.errors import ConfigError, EvaluationError, UnknownNameError
from darwinmerge.evaluate import TASK_SOURCES, TaskItem, load_jsonl, load_tasks, split_of


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _records(n: int, category: str = "REASONING", prefix: str = "r") -> list[dict]:
    return [
        {"id": f"{prefix}{i}", "category": category, "prompt": f"q{i}", "answer": str(i)}
        for i in range(n)
    ]


def test_split_is_stable_and_hash_based() -> None:
    # Pinned values: a change of salt, hash or threshold rule would reshuffle the splits
    # of every saved study, so it must show up here.
    got = [split_of(f"item-{i}") for i in range(8)]
    assert got == PINNED
    assert [split_of(f"item-{i}") for i in range(8)] == got  # same call, same answer
    assert split_of("item-0", salt="other-salt") in ("fitness", "test")


PINNED = ["fitness", "test", "fitness", "test", "test", "fitness", "test", "test"]


@pytest.mark.parametrize("fraction", [0.5, 0.2])
def test_split_fraction_over_2000_ids(fraction: float) -> None:
    ids = [f"zoo/{i:05d}" for i in range(2000)]
    test = {i for i in ids if split_of(i, test_fraction=fraction) == "test"}
    fitness = {i for i in ids if split_of(i, test_fraction=fraction) == "fitness"}
    assert test.isdisjoint(fitness) and test | fitness == set(ids)
    # binomial sd at n=2000 is <= 0.0112; allow 4 sd
    assert abs(len(test) / 2000 - fraction) < 0.045


def test_split_edges_and_nesting() -> None:
    ids = [f"x{i}" for i in range(300)]
    assert all(split_of(i, test_fraction=0.0) == "fitness" for i in ids)
    assert all(split_of(i, test_fraction=1.0) == "test" for i in ids)
    # a smaller test fraction gives a subset of the larger one's test split
    small = {i for i in ids if split_of(i, test_fraction=0.2) == "test"}
    large = {i for i in ids if split_of(i, test_fraction=0.6) == "test"}
    assert small < large
    with pytest.raises(ConfigError):
        split_of("x", test_fraction=1.5)


def test_load_jsonl_reads_items_and_choices(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        json.dumps({"id": "a", "category": "C", "prompt": "p", "answer": "1"})
        + "\n\n"
        + json.dumps(
            {"id": "b", "category": "C", "prompt": "p", "answer": " y", "choices": [" x", " y"]}
        )
        + "\n",
        encoding="utf-8",
    )
    items = load_jsonl(path)
    assert items == [
        TaskItem("a", "C", "p", "1"),
        TaskItem("b", "C", "p", " y", (" x", " y")),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a", "category": "C", "prompt": "p"}', "t.jsonl:2: field 'answer' is missing"),
        (
            '{"id": "a", "category": "C", "prompt": "p", "answer": 3}',
            "field 'answer' must be a string",
        ),
        (
            '{"id": "a", "category": "C", "prompt": "p", "answer": "1", "x": 1}',
            "unknown field(s) 'x'",
        ),
        (
            '{"id": "a", "category": "C", "prompt": "p", "answer": "z", "choices": ["x", "y"]}',
            "not one of 'choices'",
        ),
        ('{"id": "a", "category": "", "prompt": "p", "answer": "1"}', "field 'category' is empty"),
        ('{"id": "a", "category": "C", "prompt": "p", "answer": "1"', "t.jsonl:2: invalid JSON"),
        (
            '{"id": "r0", "category": "C", "prompt": "p", "answer": "1"}',
            "duplicate item id 'r0' (first on line 1)",
        ),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_load_jsonl_errors_name_file_line_and_field(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(_records(1)[0]) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(EvaluationError) as err:
        load_jsonl(path)
    assert message in str(err.value)
    assert str(path) + ":2" in str(err.value)


def test_load_tasks_specs_and_split_filter(tmp_path: Path) -> None:
    folder = tmp_path / "tasks"
    folder.mkdir()
    _write(folder / "a.jsonl", _records(40, "REASONING", "r"))
    _write(folder / "b.jsonl", _records(40, "CODE", "c"))
    every = load_tasks(str(folder), split=None)
    assert len(every) == 80 and [it.id for it in every[:2]] == ["r0", "r1"]
    assert load_tasks(f"jsonl:{folder}", split="all") == every
    fit = load_tasks(str(folder), split="fitness")
    test = load_tasks(f"jsonl:{folder / 'a.jsonl'}", split="test")
    test_all = load_tasks(str(folder), split="test")
    assert {it.id for it in fit}.isdisjoint({it.id for it in test_all})
    assert len(fit) + len(test_all) == 80
    assert [it.id for it in test] == [it.id for it in test_all if it.category == "REASONING"]
    assert all(split_of(it.id) == "test" for it in test_all)


def test_a_list_of_specs_pools_their_items(tmp_path: Path) -> None:
    a = _write(tmp_path / "gpqa.jsonl", _records(30, "GPQA", "g"))
    b = _write(tmp_path / "mmmlu.jsonl", _records(20, "MMMLU", "m"))
    pooled = load_tasks([f"jsonl:{a}", str(b)], split=None)
    assert [it.id for it in pooled] == [f"g{i}" for i in range(30)] + [f"m{i}" for i in range(20)]
    test = load_tasks([f"jsonl:{a}", str(b)], split="test")
    assert [it.id for it in test] == [it.id for it in pooled if split_of(it.id) == "test"]
    dup = _write(tmp_path / "dup.jsonl", _records(3, "OTHER", "g"))
    with pytest.raises(EvaluationError, match="duplicate item id 'g0'"):
        load_tasks([str(a), str(dup)], split=None)


def test_load_tasks_errors(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    _write(folder / "a.jsonl", _records(2, prefix="same"))
    _write(folder / "b.jsonl", _records(2, prefix="same"))
    with pytest.raises(EvaluationError, match="duplicate item id 'same0'"):
        load_tasks(str(folder), split=None)
    with pytest.raises(UnknownNameError, match="did you mean 'jsonl'"):
        load_tasks("jsnl:whatever", split=None)
    with pytest.raises(ConfigError, match="neither a known source"):
        load_tasks("no-such-file.jsonl", split=None)
    with pytest.raises(EvaluationError, match="task file not found"):
        load_tasks("jsonl:no-such-file.jsonl", split=None)
    with pytest.raises(ConfigError, match="unknown split"):
        load_tasks(str(folder / "a.jsonl"), split="train")


def test_registered_source_is_used(tmp_path: Path) -> None:
    name = "unit-test-source"
    if name not in TASK_SOURCES:
        TASK_SOURCES.add(
            name, lambda arg: [TaskItem(f"u{i}{arg}", "K", "p", "a") for i in range(6)]
        )
    got = load_tasks(f"{name}:x", split="all")
    assert [it.id for it in got] == [f"u{i}x" for i in range(6)]

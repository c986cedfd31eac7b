"""Task items, the deterministic fitness / test split, JSONL files and task sources.

An item's split is a pure function of its id (a salted SHA-256), so the fitness and
test splits are disjoint by construction and no run can select on the test split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from darwinmerge.errors import ConfigError, EvaluationError
from darwinmerge.registry import Registry

__all__ = [
    "TaskItem",
    "Split",
    "SPLITS",
    "split_of",
    "filter_split",
    "load_jsonl",
    "TaskSource",
    "TASK_SOURCES",
    "load_tasks",
    "check_unique_ids",
    "stratified_subset",
    "fresh_subset",
]

Split = Literal["fitness", "test"]
SPLITS: tuple[str, ...] = ("fitness", "test", "all")
DEFAULT_SALT = "darwin-split-v1"

_FIELDS = {"id", "category", "prompt", "answer", "choices", "target"}
_REQUIRED = ("id", "category", "prompt", "answer")


@dataclass(frozen=True)
class TaskItem:
    """One evaluation item.

    ``prompt`` is plain text ending where the model should continue. For generative
    items ``answer`` is the short expected answer; for multiple-choice items
    ``choices`` are literal continuations of the prompt and ``answer`` is one of them.
    """

    id: str
    category: str
    prompt: str
    answer: str
    choices: tuple[str, ...] | None = None
    target: str | None = None
    """The whole gold continuation of ``prompt`` when the model is expected to write
    more than the answer (a worked trace, then ``ANSWER: ...``); JSONL key ``target``.
    The continuous scorers (``gold_logprob``, ``gold_prob``, ``gold_margin``) score its
    log-probability and fall back to ``answer`` when it is absent."""

    @property
    def gold(self) -> str:
        """The gold continuation: ``target`` when given, else ``answer``."""
        return self.target if self.target is not None else self.answer

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "category": self.category,
            "prompt": self.prompt,
            "answer": self.answer,
        }
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.target is not None:
            out["target"] = self.target
        return out


def split_of(item_id: str, *, test_fraction: float = 0.5, salt: str = DEFAULT_SALT) -> Split:
    """``"test"`` when ``sha256(salt + "\\0" + id)`` read as a fraction of 2**64 is below
    ``test_fraction``, else ``"fitness"``. Stable across runs, machines and Python
    versions (no use of Python's salted ``hash()``)."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1], got {test_fraction}")
    digest = hashlib.sha256(f"{salt}\0{item_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "test" if u < test_fraction else "fitness"


def filter_split(
    items: Sequence[TaskItem],
    split: str | None,
    *,
    test_fraction: float = 0.5,
    salt: str = DEFAULT_SALT,
) -> list[TaskItem]:
    """Keep the items of ``split`` ("fitness", "test"); ``None`` or "all" keeps all."""
    if split is None or split == "all":
        return list(items)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    return [it for it in items if split_of(it.id, test_fraction=test_fraction, salt=salt) == split]


def _subset_key(seed: int, item_id: str) -> bytes:
    return hashlib.sha256(f"darwin-subset\0{seed}\0{item_id}".encode()).digest()


def stratified_subset(
    items: Sequence[TaskItem], n_or_fraction: int | float, *, seed: int = 0
) -> list[TaskItem]:
    """A seeded subset with the same share of every category, interleaved.

    ``n_or_fraction``: an ``int`` keeps ``min(n, size_c)`` items of each category ``c``;
    a ``float`` in (0, 1] keeps ``max(1, round(f * size_c))``. Within a category the
    items are ordered by ``sha256("darwin-subset", seed, id)`` (independent of the input
    order, and a smaller subset of one seed is a prefix of a larger one). The result
    interleaves the categories (sorted by name) round-robin, in proportion to their kept
    sizes, so every prefix (an evaluation chunk) is itself stratified.
    """
    if isinstance(n_or_fraction, bool) or not isinstance(n_or_fraction, int | float):
        raise ConfigError(f"subset size must be an int or a float, got {n_or_fraction!r}")
    if isinstance(n_or_fraction, int) and n_or_fraction < 1:
        raise ConfigError(f"subset size must be >= 1 item per category, got {n_or_fraction}")
    if isinstance(n_or_fraction, float) and not 0.0 < n_or_fraction <= 1.0:
        raise ConfigError(f"subset fraction must be in (0, 1], got {n_or_fraction}")
    by_cat: dict[str, list[TaskItem]] = {}
    for it in items:
        by_cat.setdefault(it.category, []).append(it)
    kept: dict[str, list[TaskItem]] = {}
    for cat in sorted(by_cat):
        group = sorted(by_cat[cat], key=lambda it: _subset_key(seed, it.id))
        if isinstance(n_or_fraction, int):
            k = min(n_or_fraction, len(group))
        else:
            k = max(1, round(n_or_fraction * len(group)))
        kept[cat] = group[:k]
    # interleave: the j-th item of category c sits at position (j + 0.5) / k_c
    slots = [
        ((j + 0.5) / len(group), cat, j) for cat, group in kept.items() for j in range(len(group))
    ]
    slots.sort(key=lambda s: (s[0], s[1]))
    return [kept[cat][j] for _, cat, j in slots]


def fresh_subset(
    items: Sequence[TaskItem],
    used: Sequence[TaskItem],
    n_or_fraction: int | float,
    *,
    seed: int = 1,
) -> list[TaskItem]:
    """A :func:`stratified_subset` of the ``items`` whose ids are not in ``used`` (e.g.
    fitness-split items the search never scored, for re-scoring its best candidates);
    empty when every item was used. Pass fitness-split items only: the split is the
    caller's, this function never reads another."""
    taken = {it.id for it in used}
    rest = [it for it in items if it.id not in taken]
    return stratified_subset(rest, n_or_fraction, seed=seed) if rest else []


def _item_from_record(record: object, where: str) -> TaskItem:
    if not isinstance(record, dict):
        raise EvaluationError(f"{where}: expected a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - _FIELDS)
    if unknown:
        raise EvaluationError(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(_FIELDS))}"
        )
    for name in _REQUIRED:
        if name not in record:
            raise EvaluationError(f"{where}: field {name!r} is missing")
        value = record[name]
        if not isinstance(value, str):
            raise EvaluationError(
                f"{where}: field {name!r} must be a string, got {type(value).__name__} "
                f"(quote it in the JSON)"
            )
    for name in ("id", "category"):
        if not record[name].strip():
            raise EvaluationError(f"{where}: field {name!r} is empty")
    choices = record.get("choices")
    if choices is not None:
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise EvaluationError(f"{where}: field 'choices' must be a list of strings")
        if len(choices) < 2:
            raise EvaluationError(f"{where}: field 'choices' needs at least 2 entries")
        if len(set(choices)) != len(choices):
            raise EvaluationError(f"{where}: field 'choices' has duplicate entries")
        if record["answer"] not in choices:
            raise EvaluationError(
                f"{where}: field 'answer' {record['answer']!r} is not one of 'choices'"
            )
        choices = tuple(choices)
    target = record.get("target")
    if target is not None and (not isinstance(target, str) or not target):
        raise EvaluationError(f"{where}: field 'target' must be a non-empty string")
    return TaskItem(
        id=record["id"],
        category=record["category"],
        prompt=record["prompt"],
        answer=record["answer"],
        choices=choices,
        target=target,
    )


def check_unique_ids(items: Sequence[TaskItem], where: str = "tasks") -> None:
    """Raise when two items share an id (the split is keyed on ids)."""
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise EvaluationError(f"{where}: duplicate item id {it.id!r}; ids must be unique")
        seen.add(it.id)


def load_jsonl(path: str | Path) -> list[TaskItem]:
    """Read one JSONL file of items; blank lines are skipped. Errors name file:line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EvaluationError(f"{path}: cannot read task file ({exc.strerror})") from exc
    items: list[TaskItem] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvaluationError(f"{where}: invalid JSON ({exc.msg})") from exc
        item = _item_from_record(record, where)
        if item.id in seen:
            raise EvaluationError(
                f"{where}: duplicate item id {item.id!r} (first on line {seen[item.id]})"
            )
        seen[item.id] = lineno
        items.append(item)
    return items


TaskSource = Callable[[str], list[TaskItem]]
"""A task source takes the text after ``name:`` in a spec and returns all items."""

TASK_SOURCES: Registry[TaskSource] = Registry(
    "task source",
    plugins={"zoo": "darwinmerge.zoo.tasks", "lmeval": "darwinmerge.evaluate.lmeval_source"},
)


@TASK_SOURCES.register("jsonl")
def _jsonl_source(arg: str) -> list[TaskItem]:
    """A ``.jsonl`` file, or a directory whose ``*.jsonl`` files are read in name order."""
    if not arg:
        raise ConfigError("task spec 'jsonl:' needs a path, e.g. jsonl:tasks/my.jsonl")
    path = Path(arg)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise EvaluationError(f"{path}: directory holds no *.jsonl task files")
        items = [it for f in files for it in load_jsonl(f)]
        check_unique_ids(items, str(path))
        return items
    if not path.exists():
        raise EvaluationError(f"{path}: task file not found")
    return load_jsonl(path)


def load_tasks(
    spec: str | Sequence[str],
    *,
    split: str | None,
    test_fraction: float = 0.5,
    salt: str = DEFAULT_SALT,
) -> list[TaskItem]:
    """Load items from a spec (or a list of specs, whose items are pooled; ids must stay
    unique across them) and keep one split.

    Specs: ``"zoo"`` / ``"zoo:ARG"`` (registered by the zoo plug-in, imported when the name
    is first asked for: :data:`TASK_SOURCES`' plug-in table; this module never imports it),
    ``"jsonl:PATH"``, a bare path to a file or directory, ``"lmeval:TASK[@INCLUDE_PATH]"``.
    """
    if not isinstance(spec, str):
        pooled = [
            it
            for one in spec
            for it in load_tasks(one, split=split, test_fraction=test_fraction, salt=salt)
        ]
        check_unique_ids(pooled, " + ".join(spec))
        return pooled
    name, sep, arg = spec.partition(":")
    if not sep and name not in TASK_SOURCES and Path(spec).exists():
        name, arg = "jsonl", spec
    elif sep and name not in TASK_SOURCES and Path(spec).exists():
        name, arg = "jsonl", spec  # a path that contains ':'
    if name not in TASK_SOURCES and not sep:
        raise ConfigError(
            f"task spec {spec!r} is neither a known source ({', '.join(TASK_SOURCES.names())}) "
            f"nor an existing path"
        )
    items = TASK_SOURCES.get(name)(arg)
    check_unique_ids(items, spec)
    return filter_split(items, split, test_fraction=test_fraction, salt=salt)

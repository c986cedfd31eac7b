"""Probe texts per category, user probe files, and their tokenisation into padded batches.

A :class:`ProbeSet` maps a category (``REASONING``, ``CODE`` ...) to a tuple of texts.
Built-in sets live in :data:`PROBE_SETS` (a :class:`~darwinmerge.registry.Registry`);
user files are JSONL (``{"text": ..., "category": ...}`` per line) or plain text (one
probe per line, the category given by the caller or taken from the file stem).
:func:`tokenize_probes` turns a set into right-padded batches with real-token masks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from darwinmerge.errors import ConfigError
from darwinmerge.registry import Registry

__all__ = [
    "CATEGORIES",
    "PROBE_SETS",
    "ProbeSet",
    "ProbeBatch",
    "ProbeBatches",
    "as_encoder",
    "builtin_probes",
    "load_probe_file",
    "resolve_probes",
    "tokenize_probes",
]

#: The skill categories of the zoo, plus generic text.
CATEGORIES: tuple[str, ...] = ("REASONING", "CODE", "LOGIC", "MULTILINGUAL", "KNOWLEDGE", "GENERIC")

Encoder = Callable[[str], list[int]]


@dataclass(frozen=True)
class ProbeSet:
    """Category -> probe texts (category order is kept; it is the row order of every map)."""

    texts: dict[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        if not self.texts:
            raise ConfigError("probe set is empty; give at least one category with texts")
        for cat, items in self.texts.items():
            if not cat or not items:
                raise ConfigError(f"probe category {cat!r} has no texts")

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.texts)

    def __len__(self) -> int:
        return sum(len(v) for v in self.texts.values())

    def items(self) -> Iterator[tuple[str, str]]:
        for cat, items in self.texts.items():
            for text in items:
                yield cat, text

    def union(self, other: ProbeSet) -> ProbeSet:
        merged: dict[str, list[str]] = {c: list(v) for c, v in self.texts.items()}
        for cat, items in other.texts.items():
            merged.setdefault(cat, []).extend(items)
        return ProbeSet({c: tuple(v) for c, v in merged.items()})

    def take(self, per_category: int) -> ProbeSet:
        """The first ``per_category`` texts of each category."""
        return ProbeSet({c: v[:per_category] for c, v in self.texts.items()})


PROBE_SETS: Registry[Callable[[], ProbeSet]] = Registry("probe set")

_BUILTIN: dict[str, tuple[str, ...]] = {
    "REASONING": (
        "If a train leaves at 3 pm and travels 120 km at 60 km per hour, it arrives at 5 pm.",
        "Tom has four apples, gives away one and buys three more, so he now holds six apples.",
        "Step one: double seven to get fourteen. Step two: add six. The result is twenty.",
        "A box holds twice as many red balls as blue ones; with nine balls, three are blue.",
        "Since every square is a rectangle and this shape is a square, it is a rectangle.",
        "The sum of the angles of a triangle is 180 degrees, so two angles of 50 leave 80.",
        "Half of a number plus ten equals eighteen, therefore the number must be sixteen.",
        "If it rains the grass gets wet; the grass is dry, so it did not rain this morning.",
    ),
    "CODE": (
        "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
        "for i in range(10):\n    if i % 2 == 0:\n        print(i)",
        "class Stack:\n    def __init__(self):\n        self.items = []",
        "int main(void) { int x = 4; return x * x; }",
        "const total = prices.reduce((acc, p) => acc + p, 0);",
        "SELECT name, age FROM users WHERE age > 30 ORDER BY name;",
        "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
        "with open('data.txt') as fh:\n    lines = fh.read().splitlines()",
    ),
    "LOGIC": (
        "All cats are mammals. Some mammals swim. It does not follow that some cats swim.",
        "Either the lamp is on or the room is dark. The room is not dark, so the lamp is on.",
        "If P implies Q and Q implies R, then P implies R by transitivity.",
        "No bird in the cage is blue. Polly is in the cage. Hence Polly is not blue.",
        "The statement 'not (A and B)' is equivalent to 'not A or not B'.",
        "True and false is false; true or false is true; not true is false.",
        "Exactly one of the three doors hides a prize, and doors one and two are empty.",
        "If every even number greater than two is a sum of primes, then so is twelve.",
    ),
    "MULTILINGUAL": (
        "Le chat dort sur le canapé pendant que la pluie tombe dehors.",
        "Der Hund läuft schnell über die grüne Wiese zum alten Haus.",
        "El niño lee un libro en la biblioteca cada sábado por la tarde.",
        "La ragazza beve un caffè caldo nella piazza del paese.",
        "O menino joga futebol com os amigos depois da escola.",
        "De fiets staat naast de deur van het kleine huis.",
        "Kot siedzi na oknie i patrzy na ptaki w ogrodzie.",
        "Solen skiner och barnen leker vid sjön hela dagen.",
    ),
    "KNOWLEDGE": (
        "Water boils at 100 degrees Celsius at sea level and freezes at zero degrees.",
        "The Earth orbits the Sun once a year and the Moon orbits the Earth once a month.",
        "Paris is the capital of France and Berlin is the capital of Germany.",
        "Light travels at about three hundred thousand kilometres per second.",
        "The human heart has four chambers: two atria and two ventricles.",
        "Oxygen has atomic number eight and hydrogen has atomic number one.",
        "The Pacific is the largest ocean and the Nile is one of the longest rivers.",
        "Photosynthesis turns carbon dioxide and water into sugar using sunlight.",
    ),
    "GENERIC": (
        "The morning was quiet, and the street outside slowly filled with people.",
        "She opened the window, looked at the sky and decided to take a long walk.",
        "A small shop on the corner sells bread, milk and fresh vegetables every day.",
        "After the meeting everyone went home, tired but happy with the plan.",
        "The old bridge crosses the river near the market in the centre of town.",
        "He wrote a short letter to his friend and posted it on the way to work.",
        "Children played in the park while their parents talked on the benches.",
        "The film started late, but the audience enjoyed every minute of it.",
    ),
}


@PROBE_SETS.register("builtin")
def builtin_probes() -> ProbeSet:
    """Hand-written probes: eight short texts for each of :data:`CATEGORIES`."""
    return ProbeSet(dict(_BUILTIN))


@PROBE_SETS.register("zoo")
def _zoo_probes() -> ProbeSet:
    """Probes drawn from the zoo's skill generators (seeded), plus the generic texts."""
    from darwinmerge.mri.zoo_probes import zoo_probe_set

    return zoo_probe_set()


def load_probe_file(path: str | Path, category: str | None = None) -> ProbeSet:
    """Read a JSONL file of ``{"text", "category"}`` objects or a text file of one probe
    per line (category: ``category`` or the file stem in upper case)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"probe file {p} does not exist; give a .jsonl or .txt file")
    texts: dict[str, list[str]] = {}
    raw = p.read_text(encoding="utf-8")
    if p.suffix.lower() in (".jsonl", ".json"):
        for n, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj: Any = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{p}:{n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise ConfigError(f"{p}:{n}: each line needs a string field 'text'")
            cat = obj.get("category", category)
            if not isinstance(cat, str) or not cat:
                raise ConfigError(f"{p}:{n}: no 'category' field and no default category given")
            texts.setdefault(cat, []).append(obj["text"])
    else:
        cat = category or p.stem.upper()
        lines = [ln for ln in raw.splitlines() if ln.strip()]
        if lines:
            texts[cat] = lines
    if not texts:
        raise ConfigError(f"probe file {p} holds no probes")
    return ProbeSet({c: tuple(v) for c, v in texts.items()})


def resolve_probes(specs: Iterable[str]) -> ProbeSet:
    """Union of probe sets named by registry name, ``zoo@ZOO_DIR`` (the world of a built
    zoo), ``path`` or ``path:CATEGORY``."""
    result: ProbeSet | None = None
    for spec in specs:
        if spec in PROBE_SETS:
            part = PROBE_SETS.get(spec)()
        elif spec.startswith("zoo@"):
            from darwinmerge.mri.zoo_probes import zoo_probe_set_for

            part = zoo_probe_set_for(spec[4:])
        elif Path(spec).exists():
            part = load_probe_file(spec)
        elif ":" in spec and Path(spec.rsplit(":", 1)[0]).exists():
            file, cat = spec.rsplit(":", 1)
            part = load_probe_file(file, category=cat)
        else:
            raise ConfigError(
                f"probe spec {spec!r} is neither a file nor a known probe set "
                f"({', '.join(PROBE_SETS.names())})"
            )
        result = part if result is None else result.union(part)
    if result is None:
        return builtin_probes()
    return result


def as_encoder(tokenizer: Any) -> Encoder:
    """A text -> token ids function from a Hugging Face tokenizer or a plain callable."""
    if hasattr(tokenizer, "encode"):
        return lambda text: list(tokenizer.encode(text))
    if callable(tokenizer):
        return lambda text: list(tokenizer(text))
    raise ConfigError(f"cannot tokenise probes with {type(tokenizer).__name__}; give a tokenizer")


@dataclass(frozen=True)
class ProbeBatch:
    """One right-padded batch: ``input_ids``/``mask`` are [B, T]; ``category`` and
    ``seq_index`` are [B] (index into the categories / into all sequences)."""

    input_ids: torch.Tensor
    mask: torch.Tensor
    category: torch.Tensor
    seq_index: torch.Tensor


@dataclass(frozen=True)
class ProbeBatches:
    """All batches of one tokenised probe set."""

    categories: tuple[str, ...]
    batches: tuple[ProbeBatch, ...]
    seq_category: torch.Tensor = field(repr=False)  # [N] category id per sequence
    seq_length: torch.Tensor = field(repr=False)  # [N] real tokens per sequence

    @property
    def num_sequences(self) -> int:
        return int(self.seq_category.numel())

    def __iter__(self) -> Iterator[ProbeBatch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def tokenize_probes(
    probes: ProbeSet,
    tokenizer: Any,
    *,
    max_length: int = 128,
    batch_size: int = 16,
    pad_id: int | None = None,
) -> ProbeBatches:
    """Tokenise every probe (truncated to ``max_length``), group by length into batches
    of ``batch_size`` and pad on the right. Probes shorter than two tokens are refused
    (a next-token loss needs two)."""
    if max_length < 2 or batch_size < 1:
        raise ConfigError("max_length must be >= 2 and batch_size >= 1")
    encode = as_encoder(tokenizer)
    if pad_id is None:
        pad_id = getattr(tokenizer, "pad_token_id", None)
        if pad_id is None:
            pad_id = 0
    cats = probes.categories
    seqs: list[tuple[list[int], int]] = []
    for cat, text in probes.items():
        ids = encode(text)[:max_length]
        if len(ids) < 2:
            raise ConfigError(f"probe {text[:40]!r} ({cat}) has fewer than 2 tokens; drop it")
        seqs.append((ids, cats.index(cat)))
    order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i][0]), i))
    batches = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(seqs[i][0]) for i in idx)
        ids_t = torch.full((len(idx), width), int(pad_id), dtype=torch.long)
        mask_t = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids = seqs[i][0]
            ids_t[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask_t[row, : len(ids)] = 1
        batches.append(
            ProbeBatch(
                input_ids=ids_t,
                mask=mask_t,
                category=torch.tensor([seqs[i][1] for i in idx], dtype=torch.long),
                seq_index=torch.tensor(idx, dtype=torch.long),
            )
        )
    return ProbeBatches(
        categories=cats,
        batches=tuple(batches),
        seq_category=torch.tensor([c for _, c in seqs], dtype=torch.long),
        seq_length=torch.tensor([len(s) for s, _ in seqs], dtype=torch.long),
    )

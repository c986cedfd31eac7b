"""Probe documents per category, user probe files, and their tokenisation into padded batches.

A :class:`ProbeSet` maps a category (``REASONING``, ``CODE`` ...) to a tuple of texts,
and each text to where its prompt ends (``prompt_chars``; 0: the whole text is
completion). Probe sets are named in :data:`PROBE_SETS` (a
:class:`~darwinmerge.registry.Registry` of ``factory(arg) -> ProbeSet``; a spec is
``name``, ``name@arg`` or ``name:arg``); a plug-in (the zoo) registers its own,
imported when its name is first asked for (the registry's plug-in table). User files
are JSONL (``{"text", "category"}`` or ``{"prompt", "completion", "category"}`` per line)
or plain text (one probe per line, no prompt part). :func:`tokenize_probes` turns a set
into right-padded batches with real-token masks and per-sequence prompt lengths in
tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from darwinmerge.errors import ConfigError
from darwinmerge.registry import Registry

__all__ = [
    "CATEGORIES",
    "LOSS_TOKENS",
    "PROBE_SETS",
    "ProbeSet",
    "ProbeBatch",
    "ProbeBatches",
    "ProbeFactory",
    "as_encoder",
    "builtin_probes",
    "load_probe_file",
    "resolve_probes",
    "tokenize_probes",
]

#: The skill categories of the zoo, plus generic text.
CATEGORIES: tuple[str, ...] = ("REASONING", "CODE", "LOGIC", "MULTILINGUAL", "KNOWLEDGE", "GENERIC")

#: Which next-token targets a probe loss counts: ``completion`` (tokens after the prompt;
#: every token of a probe without a prompt part) or ``all`` (every real token).
LOSS_TOKENS: tuple[str, ...] = ("completion", "all")

Encoder = Callable[[str], list[int]]


@dataclass(frozen=True)
class ProbeSet:
    """Category -> probe texts (category order is kept; it is the row order of every map).

    ``prompt_chars[cat][i]`` is the length in characters of the prompt that opens
    ``texts[cat][i]`` (0 when the text has no prompt part; the default for every text)."""

    texts: Mapping[str, tuple[str, ...]]
    prompt_chars: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.texts:
            raise ConfigError("probe set is empty; give at least one category with texts")
        texts = {c: tuple(v) for c, v in self.texts.items()}
        given = dict(self.prompt_chars)
        unknown = sorted(set(given) - set(texts))
        if unknown:
            raise ConfigError(f"prompt lengths given for unknown categories {unknown}")
        prompts: dict[str, tuple[int, ...]] = {}
        for cat, items in texts.items():
            if not cat or not items:
                raise ConfigError(f"probe category {cat!r} has no texts")
            lens = tuple(int(n) for n in given.get(cat, (0,) * len(items)))
            if len(lens) != len(items):
                raise ConfigError(
                    f"probe category {cat!r}: {len(lens)} prompt lengths for {len(items)} texts"
                )
            for text, n in zip(items, lens, strict=True):
                if not 0 <= n < len(text):
                    raise ConfigError(
                        f"probe {text[:40]!r} ({cat}): prompt length {n} leaves no completion"
                    )
            prompts[cat] = lens
        object.__setattr__(self, "texts", texts)
        object.__setattr__(self, "prompt_chars", prompts)

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.texts)

    def __len__(self) -> int:
        return sum(len(v) for v in self.texts.values())

    def items(self) -> Iterator[tuple[str, str]]:
        """``(category, text)`` for every probe, in category order."""
        for cat, text, _ in self.documents():
            yield cat, text

    def documents(self) -> Iterator[tuple[str, str, int]]:
        """``(category, text, prompt_chars)`` for every probe, in category order."""
        for cat, items in self.texts.items():
            yield from ((cat, t, n) for t, n in zip(items, self.prompt_chars[cat], strict=True))

    def union(self, other: ProbeSet) -> ProbeSet:
        texts: dict[str, list[str]] = {c: list(v) for c, v in self.texts.items()}
        prompts: dict[str, list[int]] = {c: list(v) for c, v in self.prompt_chars.items()}
        for cat, items in other.texts.items():
            texts.setdefault(cat, []).extend(items)
            prompts.setdefault(cat, []).extend(other.prompt_chars[cat])
        return ProbeSet(
            {c: tuple(v) for c, v in texts.items()}, {c: tuple(v) for c, v in prompts.items()}
        )

    def take(self, per_category: int) -> ProbeSet:
        """The first ``per_category`` texts of each category."""
        return ProbeSet(
            {c: v[:per_category] for c, v in self.texts.items()},
            {c: v[:per_category] for c, v in self.prompt_chars.items()},
        )


ProbeFactory = Callable[[str], ProbeSet]
"""A probe-set factory takes the text after ``name@`` / ``name:`` in a spec ("" for a bare
name) and returns the set."""

PROBE_SETS: Registry[ProbeFactory] = Registry(
    "probe set",
    plugins={"zoo": "darwinmerge.zoo.probes"},  # the demo zoo: a plug-in
)

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


def builtin_probes() -> ProbeSet:
    """Hand-written probes: eight short texts for each of :data:`CATEGORIES` (no prompt
    part: every token is a completion token)."""
    return ProbeSet(dict(_BUILTIN))


@PROBE_SETS.register("builtin")
def _builtin_factory(arg: str) -> ProbeSet:
    if arg:
        raise ConfigError(f"probe set 'builtin' takes no argument (got {arg!r})")
    return builtin_probes()


def _record(obj: Any, where: str, category: str | None) -> tuple[str, str, int]:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    cat = obj.get("category", category)
    if not isinstance(cat, str) or not cat:
        raise ConfigError(f"{where}: no 'category' field and no default category given")
    if "text" in obj:
        if "prompt" in obj or "completion" in obj:
            raise ConfigError(f"{where}: give either 'text' or 'prompt' + 'completion', not both")
        if not isinstance(obj["text"], str):
            raise ConfigError(f"{where}: each line needs a string field 'text'")
        return cat, obj["text"], 0
    prompt, completion = obj.get("prompt"), obj.get("completion")
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise ConfigError(
            f"{where}: each line needs a string field 'text', or string fields 'prompt' "
            "and 'completion'"
        )
    if not completion:
        raise ConfigError(f"{where}: field 'completion' is empty")
    return cat, prompt + completion, len(prompt)


def load_probe_file(path: str | Path, category: str | None = None) -> ProbeSet:
    """Read a JSONL file of ``{"text", "category"}`` or ``{"prompt", "completion",
    "category"}`` objects, or a text file of one probe per line (no prompt part; category:
    ``category`` or the file stem in upper case)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"probe file {p} does not exist; give a .jsonl or .txt file")
    texts: dict[str, list[str]] = {}
    prompts: dict[str, list[int]] = {}
    raw = p.read_text(encoding="utf-8")
    if p.suffix.lower() in (".jsonl", ".json"):
        for n, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj: Any = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{p}:{n}: not valid JSON ({exc.msg})") from exc
            cat, text, chars = _record(obj, f"{p}:{n}", category)
            texts.setdefault(cat, []).append(text)
            prompts.setdefault(cat, []).append(chars)
    else:
        cat = category or p.stem.upper()
        lines = [ln for ln in raw.splitlines() if ln.strip()]
        if lines:
            texts[cat] = lines
            prompts[cat] = [0] * len(lines)
    if not texts:
        raise ConfigError(f"probe file {p} holds no probes")
    return ProbeSet(
        {c: tuple(v) for c, v in texts.items()}, {c: tuple(v) for c, v in prompts.items()}
    )


def _registered(spec: str) -> tuple[str, str] | None:
    """``(name, arg)`` when ``spec`` is ``name``, ``name@arg`` or ``name:arg`` of a
    registered probe set, else None."""
    if spec in PROBE_SETS:
        return spec, ""
    for sep in ("@", ":"):
        name, found, arg = spec.partition(sep)
        if found and name in PROBE_SETS:
            return name, arg
    return None


def _resolve_one(spec: str) -> ProbeSet:
    if Path(spec).is_file():
        return load_probe_file(spec)
    hit = _registered(spec)
    if hit is not None:
        return PROBE_SETS.get(hit[0])(hit[1])
    if ":" in spec and Path(spec.rsplit(":", 1)[0]).is_file():
        file, cat = spec.rsplit(":", 1)
        return load_probe_file(file, category=cat)
    raise ConfigError(
        f"probe spec {spec!r} is neither a file nor a known probe set "
        f"({', '.join(PROBE_SETS.names())}; NAME@ARG or NAME:ARG for a parametrised one)"
    )


def resolve_probes(specs: Iterable[str]) -> ProbeSet:
    """Union of the probe sets named by ``specs``: a registered name (``builtin``, and
    what plug-ins register, e.g. ``zoo``), ``name@arg`` / ``name:arg`` (e.g.
    ``zoo@ZOO_DIR``), a file ``path`` or ``path:CATEGORY``. No spec: ``builtin``."""
    result: ProbeSet | None = None
    for spec in specs:
        part = _resolve_one(spec)
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
    """One right-padded batch: ``input_ids``/``mask`` are [B, T]; ``category``,
    ``seq_index`` and ``prompt_len`` are [B] (index into the categories / into all
    sequences; prompt tokens at the start of each row, 0 when there is no prompt)."""

    input_ids: torch.Tensor
    mask: torch.Tensor
    category: torch.Tensor
    seq_index: torch.Tensor
    prompt_len: torch.Tensor | None = None

    def target_mask(self, loss_tokens: str = "completion") -> torch.Tensor:
        """[B, T-1] float64: 1 where the next-token target at position t+1 counts in the
        loss (both tokens real, and with ``completion`` the target past the prompt)."""
        if loss_tokens not in LOSS_TOKENS:
            raise ConfigError(f"loss tokens must be one of {', '.join(LOSS_TOKENS)}")
        valid = (self.mask[:, :-1] * self.mask[:, 1:]).double()
        if loss_tokens == "completion" and self.prompt_len is not None:
            pos = torch.arange(1, self.mask.shape[1])[None, :]
            valid = valid * (pos >= self.prompt_len[:, None]).double()
        return valid


@dataclass(frozen=True)
class ProbeBatches:
    """All batches of one tokenised probe set."""

    categories: tuple[str, ...]
    batches: tuple[ProbeBatch, ...]
    seq_category: torch.Tensor = field(repr=False)  # [N] category id per sequence
    seq_length: torch.Tensor = field(repr=False)  # [N] real tokens per sequence
    seq_prompt_len: torch.Tensor | None = field(default=None, repr=False)  # [N]

    @property
    def num_sequences(self) -> int:
        return int(self.seq_category.numel())

    def __iter__(self) -> Iterator[ProbeBatch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _prompt_tokens(encode: Encoder, text: str, ids: list[int], chars: int) -> int:
    """Tokens of ``ids`` (the encoded ``text``) that hold only prompt characters: the
    common prefix of ``ids`` and the encoded prompt. A token that straddles the
    boundary counts as completion."""
    if chars == 0:
        return 0
    prompt_ids = encode(text[:chars])
    n = 0
    for a, b in zip(ids, prompt_ids, strict=False):
        if a != b:
            break
        n += 1
    return n


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
    (a next-token loss needs two). Each sequence's prompt length in tokens is the common
    prefix of the encoded text and the encoded prompt (capped at the truncated length)."""
    if max_length < 2 or batch_size < 1:
        raise ConfigError("max_length must be >= 2 and batch_size >= 1")
    encode = as_encoder(tokenizer)
    if pad_id is None:
        pad_id = getattr(tokenizer, "pad_token_id", None)
        if pad_id is None:
            pad_id = 0
    cats = probes.categories
    seqs: list[tuple[list[int], int, int]] = []
    for cat, text, chars in probes.documents():
        full = encode(text)
        ids = full[:max_length]
        if len(ids) < 2:
            raise ConfigError(f"probe {text[:40]!r} ({cat}) has fewer than 2 tokens; drop it")
        n_prompt = min(_prompt_tokens(encode, text, full, chars), len(ids))
        seqs.append((ids, cats.index(cat), n_prompt))
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
                prompt_len=torch.tensor([seqs[i][2] for i in idx], dtype=torch.long),
            )
        )
    return ProbeBatches(
        categories=cats,
        batches=tuple(batches),
        seq_category=torch.tensor([c for _, c, _ in seqs], dtype=torch.long),
        seq_length=torch.tensor([len(s) for s, _, _ in seqs], dtype=torch.long),
        seq_prompt_len=torch.tensor([n for _, _, n in seqs], dtype=torch.long),
    )

"""Seeded synthetic skill families for the demo zoo, one category each.

Every family produces *documents* of the form ``prompt + completion`` where the
completion is ``"<trace>\\nANSWER: <answer>"``: a short worked trace, then the answer line
the evaluation's default extractor reads. Evaluation items are TaskItem-compatible
dicts ``{id, category, prompt, answer, target}`` whose ``prompt`` ends where the model
continues and whose ``target`` is the gold completion.

Categories (the seed's probe categories):

* ``reasoning``: chained addition / subtraction with a one-line-per-step trace.
* ``code``: string and list manipulation (reverse, sort, dedupe).
* ``logic``: ordering puzzles (shuffled chain facts; who is first / last, is X above Y).
* ``multilingual``: the code skills asked in synthetic languages, each with its own
  instruction words and its own alphabet.
* ``knowledge``: a fixed random table entity -> colour / city, memorised in pre-training.

Held-out rule: evaluation items are drawn first; the training stream of every family
except ``knowledge`` skips any document whose prompt is an evaluation prompt, so no
evaluation item is ever trained on. ``knowledge`` is the exception by design: the facts
*are* the training data and the evaluation asks them back with the same phrasing (a
memorisation probe, like a closed-book QA benchmark on pre-training facts).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = [
    "CATEGORIES",
    "Doc",
    "SkillWorld",
    "make_world",
    "eval_items",
    "training_docs",
    "GENERATORS",
]

CATEGORIES: tuple[str, ...] = ("reasoning", "code", "logic", "multilingual", "knowledge")


@dataclass(frozen=True)
class Doc:
    """One problem: ``prompt`` (ends with a newline), ``trace`` and ``answer``."""

    category: str
    prompt: str
    trace: str
    answer: str

    @property
    def completion(self) -> str:
        return f"{self.trace}\nANSWER: {self.answer}"

    @property
    def text(self) -> str:
        return self.prompt + self.completion


@dataclass(frozen=True)
class Language:
    name: str
    words: dict[str, str]  # english op name -> instruction word
    alphabet: str


@dataclass(frozen=True)
class SkillWorld:
    """The fixed random tables a zoo seed defines (languages, facts)."""

    seed: int
    languages: tuple[Language, ...]
    facts: tuple[tuple[str, str, str], ...]  # (entity, relation, value)


_CONS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_COLOURS = ("red", "blue", "green", "gold", "grey", "pink", "black", "white")
_CITIES = ("oslo", "lima", "rome", "kyiv", "baku", "doha", "riga", "bern")
_CODE_OPS = ("rev", "sort", "dedup")
_LOGIC_NAMES = "PQRSTUVW"


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_CONS) + rng.choice(_VOWELS) for _ in range(syllables))


def make_world(seed: int, *, n_languages: int = 3, n_facts: int = 300) -> SkillWorld:
    """Draw the languages and the fact table of a zoo seed (pure function of ``seed``)."""
    rng = random.Random(f"world-{seed}")
    languages = []
    used: set[str] = set()
    alphabets = ("ABCDEFGH", "KLMNOPQR", "STUVWXYZ", "abcdefgh")
    for i in range(n_languages):
        words = {}
        for op in _CODE_OPS:
            w = _word(rng, 2)
            while w in used:
                w = _word(rng, 2)
            used.add(w)
            words[op] = w
        name = _word(rng, 1)
        while name in used:
            name = _word(rng, 1)
        used.add(name)
        languages.append(Language(name=name, words=words, alphabet=alphabets[i % 4]))
    facts: list[tuple[str, str, str]] = []
    entities: set[str] = set()
    while len(facts) < n_facts:
        ent = _word(rng, 2) + rng.choice(_CONS)
        if ent in entities or ent in used:
            continue
        entities.add(ent)
        if rng.random() < 0.5:
            facts.append((ent, "colour", rng.choice(_COLOURS)))
        else:
            facts.append((ent, "city", rng.choice(_CITIES)))
    return SkillWorld(seed=seed, languages=tuple(languages), facts=tuple(facts))


# --- generators: (rng, world) -> Doc --------------------------------------------------


def gen_reasoning(rng: random.Random, world: SkillWorld) -> Doc:
    """Three operands, two steps, every intermediate value in [0, 99]."""
    while True:
        a = rng.randint(2, 60)
        steps = []
        value = a
        expr = str(a)
        ok = True
        for _ in range(2):
            b = rng.randint(2, 40)
            op = rng.choice("+-")
            new = value + b if op == "+" else value - b
            if not 0 <= new <= 99:
                ok = False
                break
            steps.append(f"{value}{op}{b}={new}")
            expr += f"{op}{b}"
            value = new
        if ok:
            return Doc("reasoning", f"calc {expr}\n", "\n".join(steps), str(value))


def _code_doc(category: str, op: str, word: str, alphabet: str, rng: random.Random) -> Doc:
    n = rng.randint(3, 6)
    if op == "dedup":
        k = rng.randint(2, min(n - 1, 4))
        pool = rng.sample(alphabet, k)
        items = [rng.choice(pool) for _ in range(n)]
        while len(set(items)) == len(items):
            items = [rng.choice(pool) for _ in range(n)]
        out = list(dict.fromkeys(items))
    else:
        items = [rng.choice(alphabet) for _ in range(n)]
        out = list(reversed(items)) if op == "rev" else sorted(items)
    trace = f"{op} {len(items)} -> {len(out)}"
    return Doc(category, f"{word} {' '.join(items)}\n", trace, " ".join(out))


def gen_code(rng: random.Random, world: SkillWorld) -> Doc:
    """Reverse, sort or dedupe a short string over the letters a-h (or digits)."""
    op = rng.choice(_CODE_OPS)
    alphabet = rng.choice(("abcdefgh", "0123456789"))
    return _code_doc("code", op, f"code {op}", alphabet, rng)


def gen_multilingual(rng: random.Random, world: SkillWorld) -> Doc:
    """The code skills asked in a synthetic language: its own words and alphabet."""
    lang = rng.choice(world.languages)
    op = rng.choice(_CODE_OPS)
    return _code_doc("multilingual", op, f"{lang.name} {lang.words[op]}", lang.alphabet, rng)


def gen_logic(rng: random.Random, world: SkillWorld) -> Doc:
    """Ordering puzzle: shuffled chain facts ``A>B``; ask first, last or ``X>Y?``."""
    n = rng.randint(3, 5)
    order = rng.sample(_LOGIC_NAMES, n)
    pairs = [f"{order[i]}>{order[i + 1]}" for i in range(n - 1)]
    rng.shuffle(pairs)
    ask = rng.choice(("first", "last", "pair"))
    if ask == "pair":
        i, j = rng.sample(range(n), 2)
        question = f"{order[i]}>{order[j]}?"
        answer = "yes" if i < j else "no"
    else:
        question = f"{ask}?"
        answer = order[0] if ask == "first" else order[-1]
    return Doc("logic", f"logic {' '.join(pairs)} {question}\n", ">".join(order), answer)


def gen_knowledge(rng: random.Random, world: SkillWorld) -> Doc:
    ent, rel, value = rng.choice(world.facts)
    return _fact_doc(ent, rel, value)


def _fact_doc(ent: str, rel: str, value: str) -> Doc:
    return Doc("knowledge", f"fact {rel} of {ent}\n", f"{ent} {rel} {value}", value)


GENERATORS: dict[str, Callable[[random.Random, SkillWorld], Doc]] = {
    "reasoning": gen_reasoning,
    "code": gen_code,
    "logic": gen_logic,
    "multilingual": gen_multilingual,
    "knowledge": gen_knowledge,
}


def _eval_docs(world: SkillWorld, category: str, n: int) -> list[Doc]:
    if category == "knowledge":
        facts = world.facts[:n]
        return [_fact_doc(*f) for f in facts]
    rng = random.Random(f"eval-{world.seed}-{category}")
    gen = GENERATORS[category]
    docs: list[Doc] = []
    seen: set[str] = set()
    tries = 0
    while len(docs) < n:
        tries += 1
        if tries > 200 * n:
            raise ValueError(f"{category}: cannot draw {n} distinct evaluation prompts")
        doc = gen(rng, world)
        if doc.prompt not in seen:
            seen.add(doc.prompt)
            docs.append(doc)
    return docs


def eval_items(world: SkillWorld, category: str, n: int) -> list[dict[str, str]]:
    """``n`` distinct evaluation items with stable ids ``f"{category}-{k:04d}"``; each
    carries its gold ``target`` (the worked trace and the answer line, what a perfect
    model writes after the prompt) for the continuous scorers."""
    return [
        {
            "id": f"{category}-{k:04d}",
            "category": category,
            "prompt": d.prompt,
            "answer": d.answer,
            "target": d.completion,
        }
        for k, d in enumerate(_eval_docs(world, category, n))
    ]


def training_docs(
    world: SkillWorld,
    mix: dict[str, float],
    *,
    stream_seed: int,
    held_out: set[str],
) -> Iterator[Doc]:
    """Endless stream of training documents drawn by the category weights of ``mix``.

    Documents whose prompt is in ``held_out`` (the evaluation prompts) are skipped,
    except for ``knowledge`` whose facts are the training data by design.
    """
    unknown = sorted(set(mix) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"unknown categories in mix: {unknown}; known: {list(CATEGORIES)}")
    cats = [c for c in CATEGORIES if mix.get(c, 0.0) > 0]
    weights = [mix[c] for c in cats]
    rng = random.Random(f"train-{world.seed}-{stream_seed}")
    while True:
        cat = rng.choices(cats, weights)[0]
        doc = GENERATORS[cat](rng, world)
        if cat != "knowledge" and doc.prompt in held_out:
            continue
        yield doc

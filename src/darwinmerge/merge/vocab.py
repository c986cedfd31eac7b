"""The child's tokenizer and the parents' embeddings aligned to it (mergekit's
``tokenizer_source: base`` and ``union``).

The *tokenizer base* is the recipe's base model, else its donor parent (mergekit: its
``base_model``). ``base``: the child keeps the tokenizer base's tokenizer; ``union``: that
tokenizer plus every token another model has and it lacks (plain tokens first, in the
order the models list them, models in recipe order after the tokenizer base; then the
added/special tokens, first settings kept). Tokens whose id is not below a model's
config ``vocab_size`` are not that model's.

Every vocabulary tensor (embeddings, lm_head; tokens on axis 0) of every model (parents
and base) is then rebuilt on the child's vocabulary before the merge: row ``i`` is the
model's row of token ``i`` where the model has that token; where it does not, the row is
that of the only model that has the token, else the base model's (when it is one of the
models and has the token), else the mean over the models that have it, else zeros. The
child's ``vocab_size`` is the size of its vocabulary. Same rules as mergekit 0.1.5
(``tokenizer/build.py``, ``tokenizer/embed.py``); mergekit takes the models other than
its base in the order of a Python set, so with three or more models the ids of tokens
only those others add can differ between its runs; here they follow the recipe.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from darwinmerge.arch import text_config
from darwinmerge.errors import ConfigError, MergeError
from darwinmerge.merge.planner import Index, TensorSource, arch_of
from darwinmerge.merge.recipe import Recipe

__all__ = ["VOCAB_COMPONENTS", "VocabAlignment", "align_vocabulary"]

#: a tokenizer's files (the donor's are replaced by the child's tokenizer)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
)
#: components whose tensors are indexed by token on axis 0
VOCAB_COMPONENTS = frozenset({"embed", "lm_head"})


def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, use_fast=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path}: cannot load its tokenizer for tokenizer_source ({exc})"
        ) from None


def _vocab_size(source: TensorSource, tokenizer: Any) -> int:
    size = text_config(source.config).get("vocab_size")
    return int(size) if size is not None else len(tokenizer.get_vocab())


def _union(base_tok: Any, tokenizers: Sequence[Any], sizes: Sequence[int]) -> Any:
    """The tokenizer base's tokenizer plus every other model's tokens (module doc)."""
    from transformers import AutoTokenizer

    vocab: dict[str, int] = {}
    added: dict[str, Any] = {}
    for tok, size in zip(tokenizers, sizes, strict=True):
        decoder = tok.added_tokens_decoder
        special = {info.content for info in decoder.values()}
        for token, idx in tok.get_vocab().items():
            if idx < size and token not in special and token not in vocab:
                vocab[token] = len(vocab)
        for idx, info in decoder.items():
            if idx < size and info.content not in added:
                added[info.content] = info
    with tempfile.TemporaryDirectory() as tmp:  # a copy: the base tokenizer stays as it is
        base_tok.save_pretrained(tmp)
        out = AutoTokenizer.from_pretrained(tmp, use_fast=True)
    base_vocab = base_tok.get_vocab()
    for token in vocab:
        if token not in added and token not in base_vocab:
            out.add_tokens(token)
    for info in added.values():
        out.add_tokens(info)
    return out


class VocabAlignment:
    """The child's tokenizer and, per vocabulary tensor, every model's rows on it."""

    def __init__(self, recipe: Recipe, sources: Sequence[TensorSource]) -> None:
        if recipe.tokenizer_source not in ("base", "union"):
            raise ConfigError(f"tokenizer_source {recipe.tokenizer_source!r}: base or union")
        paths = [p.path for p in recipe.parents] + ([recipe.base] if recipe.base else [])
        names = [p.name for p in recipe.parents]
        base = len(paths) - 1 if recipe.base else names.index(recipe.donor_name)
        tokenizers = [_load_tokenizer(p) for p in paths]
        sizes = [_vocab_size(s, t) for s, t in zip(sources, tokenizers, strict=True)]
        for path, tok, size in zip(paths, tokenizers, sizes, strict=True):
            beyond = [t for t, i in tok.get_vocab().items() if i >= size]
            if path == paths[base] and beyond:
                raise ConfigError(
                    f"{path}: its tokenizer has {len(beyond)} tokens beyond vocab_size={size}"
                    " (no embedding rows); tokenizer_source needs a tokenizer that fits"
                )
        if recipe.tokenizer_source == "base":
            self.tokenizer = tokenizers[base]
        else:
            order = [base] + [i for i in range(len(paths)) if i != base]
            self.tokenizer = _union(
                tokenizers[base], [tokenizers[i] for i in order], [sizes[i] for i in order]
            )
        vocab = self.tokenizer.get_vocab()
        self.size = len(vocab)
        #: per model: child token id -> the model's row, or -1 where it lacks the token
        self.rows: list[torch.Tensor] = []
        for tok, size in zip(tokenizers, sizes, strict=True):
            own = tok.get_vocab()
            rows = torch.full((self.size,), -1, dtype=torch.long)
            for token, idx in vocab.items():
                if token in own and own[token] < size:
                    rows[idx] = own[token]
            self.rows.append(rows)
        #: preferred for a token some models lack and several have (mergekit: base_model)
        self.base = base
        self.sources = list(sources)
        self.archs = [arch_of(s) for s in sources]
        self._aligned: dict[tuple[int, str], torch.Tensor] = {}
        self._lock = threading.Lock()

    def save_tokenizer(self, out_dir: Path) -> None:
        """Write the child's tokenizer to ``out_dir`` in place of the donor's files."""
        for name in _TOKENIZER_FILES:
            (out_dir / name).unlink(missing_ok=True)
        self.tokenizer.save_pretrained(out_dir)

    def is_vocab(self, source: int, name: str) -> bool:
        arch = self.archs[source]
        return name not in arch.unknown and arch.role(name).component in VOCAB_COMPONENTS

    def aligned(self, source: int, name: str) -> torch.Tensor:
        """Source ``source``'s tensor ``name`` on the child's vocabulary (each model's
        tensor of that name is rebuilt once, when the first of them is asked for)."""
        with self._lock:
            key = (source, name)
            if key not in self._aligned:
                canonical = self.archs[source].role(name).canonical
                names = [self._located(i, canonical) for i in range(len(self.sources))]
                for i, tensor in enumerate(self._rebuild(names)):
                    self._aligned[(i, names[i])] = tensor
            return self._aligned.pop(key)

    def _located(self, source: int, canonical: str) -> str:
        where = self.archs[source].locate(canonical)
        if where is None or where[1] != ():
            raise MergeError(f"{canonical}: not stored whole in model {source}")
        return where[0]

    def _rebuild(self, names: Sequence[str]) -> list[torch.Tensor]:
        tensors = [s.get(n) for s, n in zip(self.sources, names, strict=True)]
        dtype = tensors[0].dtype
        for t in tensors[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
        tensors = [t.to(dtype) for t in tensors]
        present = torch.stack([r >= 0 for r in self.rows])  # [models, vocab]
        count = present.sum(dim=0)
        default = torch.zeros((self.size, *tensors[0].shape[1:]), dtype=dtype)
        for token in torch.nonzero(count < len(tensors)).flatten().tolist():
            holders = [m for m in range(len(tensors)) if present[m, token]]
            if not holders:
                continue  # no model has it: zeros
            if len(holders) == 1:
                src = holders[0]
            elif self.base is not None and present[self.base, token]:
                src = self.base
            else:
                found = [tensors[m][self.rows[m][token]] for m in holders]
                default[token] = sum(found[1:], found[0].clone()) / len(found)
                continue
            default[token] = tensors[src][self.rows[src][token]]
        out = []
        for tensor, own in zip(tensors, self.rows, strict=True):
            has = own >= 0
            rebuilt = default.clone()
            rebuilt[has] = tensor[own[has]]
            out.append(rebuilt)
        return out


class _AlignedSource:
    """A source whose vocabulary tensors are read on the child's vocabulary. Other
    attributes (a reader's ``pool``, ``file_bytes`` ...) are the inner source's."""

    #: what the planner checks before planning a recipe with tokenizer_source
    vocabulary_aligned = True

    def __init__(self, inner: TensorSource, alignment: VocabAlignment, index: int) -> None:
        self.__dict__["inner"] = inner
        self.alignment = alignment
        self.index = index
        config = dict(inner.config)
        if "text_config" in config:
            config["text_config"] = {**config["text_config"], "vocab_size": alignment.size}
        else:
            config["vocab_size"] = alignment.size
        self.config = config

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["inner"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("alignment", "index", "config"):
            self.__dict__[name] = value
        else:  # e.g. the merge's buffer pool: the reader's own
            setattr(self.inner, name, value)

    def keys(self) -> list[str]:
        return list(self.inner.keys())

    def shape(self, name: str) -> tuple[int, ...]:
        shape = tuple(self.inner.shape(name))
        if self.alignment.is_vocab(self.index, name):
            return (self.alignment.size, *shape[1:])
        return shape

    def dtype(self, name: str) -> torch.dtype:
        return self.inner.dtype(name)

    def get(self, name: str) -> torch.Tensor:
        if self.alignment.is_vocab(self.index, name):
            return self.alignment.aligned(self.index, name)
        return self.inner.get(name)

    def get_slice(self, name: str, index: Index) -> torch.Tensor:
        if self.alignment.is_vocab(self.index, name):
            return self.alignment.aligned(self.index, name)[index]
        return self.inner.get_slice(name, index)


def align_vocabulary(
    recipe: Recipe, sources: Sequence[TensorSource]
) -> tuple[list[TensorSource], VocabAlignment]:
    """The sources seen on the child's vocabulary, and the alignment (its tokenizer)."""
    if recipe.slices is not None:
        raise ConfigError("tokenizer_source does not combine with slices (layer stacking)")
    alignment = VocabAlignment(recipe, sources)
    views: list[TensorSource] = [_AlignedSource(s, alignment, i) for i, s in enumerate(sources)]
    return views, alignment

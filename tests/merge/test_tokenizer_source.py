"""``tokenizer_source: base`` and ``union`` as in mergekit 0.1.5: the child's tokenizer,
its ``vocab_size`` and every tensor (embeddings and lm_head rebuilt on the child's
vocabulary) equal mergekit's, on tiny qwen3 parents whose tokenizers differ: ``a``
numbers two tokens the other way round and lacks one, ``b`` has a plain and an added
token more (and two more embedding rows)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from darwinmerge.errors import ConfigError
from darwinmerge.merge import Recipe, load_any_config, merge_to_disk
from darwinmerge.merge.mergekit_io import recipe_to_mergekit
from darwinmerge.zoo.tiny import build_tiny_model, save_tiny

from .conftest import read_tensors, require_mergekit, run_mergekit

TIES = [
    {"model": "a", "parameters": {"weight": 0.6, "density": 0.5}},
    {"model": "b", "parameters": {"weight": 0.4, "density": 0.7}},
]
CONFIGS: dict[str, dict[str, Any]] = {
    "ties_union": {"merge_method": "ties", "base_model": "base", "models": TIES},
    "ties_base": {"merge_method": "ties", "base_model": "base", "models": TIES},
    "linear_union": {  # the base is one more input, and the tokenizer base
        "merge_method": "linear",
        "base_model": "base",
        "models": [
            {"model": "a", "parameters": {"weight": 0.6}},
            {"model": "b", "parameters": {"weight": 0.4}},
            {"model": "base", "parameters": {"weight": 0.2}},
        ],
    },
    "slerp_union": {
        "merge_method": "slerp",
        "base_model": "b",
        "models": [{"model": "a"}, {"model": "b"}],
        "parameters": {"t": 0.3},
    },
}
VOCAB = {"ties_union": 130, "ties_base": 128, "linear_union": 130, "slerp_union": 130}


def _save_tokenizer(out: Path, vocab: dict[str, int], added: tuple[str, ...] = ()) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t1"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")
    if added:
        fast.add_tokens(list(added))
    fast.save_pretrained(out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    require_mergekit()
    root = tmp_path_factory.mktemp("tok")
    words = ["<eos>"] + [f"t{i}" for i in range(1, 128)]
    base = {w: i for i, w in enumerate(words)}
    a = dict(base)
    a["t5"], a["t9"] = base["t9"], base["t5"]
    del a["t100"]  # a's row 100 belongs to no token
    b = {**base, "zz": 128}
    for name, seed, vocab, added, size in (
        ("base", 2, base, (), 128),
        ("a", 0, a, (), 128),
        ("b", 1, b, ("<think>",), 130),
    ):
        out = save_tiny(build_tiny_model("qwen3", seed=seed, vocab_size=size), root / name)
        _save_tokenizer(out, vocab, added)
    full = {
        name: {**cfg, "tokenizer_source": name.split("_")[1], "dtype": "float32"}
        for name, cfg in CONFIGS.items()
    }
    run_mergekit(root, full)
    return root


@pytest.mark.parametrize("name", list(CONFIGS))
def test_child_tokenizer_and_embeddings_equal_mergekit(runs: Path, name: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert not (runs / f"mk-{name}.error").exists()
    recipe = load_any_config(runs / f"{name}.yaml")
    assert recipe.tokenizer_source == name.split("_")[1]
    out = merge_to_disk(recipe, runs / f"dw-{name}").out_dir
    ours, theirs = read_tensors(out), read_tensors(runs / f"mk-{name}")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key].shape == theirs[key].shape, key
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6, msg=key)
    vocab = AutoTokenizer.from_pretrained(out).get_vocab()
    assert vocab == AutoTokenizer.from_pretrained(runs / f"mk-{name}").get_vocab()
    assert len(vocab) == VOCAB[name] and ("<think>" in vocab) == (VOCAB[name] == 130)
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == len(vocab)
    assert (
        config["vocab_size"]
        == json.loads((runs / f"mk-{name}" / "config.json").read_text())["vocab_size"]
    )
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert model.get_input_embeddings().weight.shape[0] == len(vocab)


def test_rows_follow_the_tokens(runs: Path) -> None:
    """base: a's rows are permuted to the base's ids (t5 and t9 swapped back), t100,
    missing in a, is filled from the base; union: a token only b has takes b's row in
    every model, so a linear merge of it is b's row."""
    from transformers import AutoTokenizer

    a, base, b = (read_tensors(runs / m) for m in ("a", "base", "b"))
    emb = "model.embed_tokens.weight"
    ours = read_tensors(runs / "dw-linear_union")
    vocab = AutoTokenizer.from_pretrained(runs / "dw-linear_union").get_vocab()
    w = {"a": 0.6, "b": 0.4, "base": 0.2}
    total = sum(w.values())

    def mixed(ra: torch.Tensor, rb: torch.Tensor, rbase: torch.Tensor) -> torch.Tensor:
        return (w["a"] * ra + w["b"] * rb + w["base"] * rbase) / total

    t5, t100 = vocab["t5"], vocab["t100"]
    torch.testing.assert_close(ours[emb][t5], mixed(a[emb][9], b[emb][5], base[emb][5]))
    torch.testing.assert_close(ours[emb][t100], mixed(base[emb][100], b[emb][100], base[emb][100]))
    for token in ("zz", "<think>"):
        row = b[emb][{"zz": 128, "<think>": 129}[token]]
        torch.testing.assert_close(ours[emb][vocab[token]], row)


def test_tokenizer_source_round_trips_and_is_refused_where_it_cannot_be() -> None:
    recipe = Recipe.parse(
        {
            "parents": [{"name": "a", "path": "/a"}, {"name": "b", "path": "/b"}],
            "method": "linear",
            "parameters": {"weight": 0.5},
            "tokenizer_source": "union",
            "donor": "b",
        }
    )
    exported = recipe_to_mergekit(recipe)
    assert exported["tokenizer_source"] == "union" and exported["base_model"] == "/b"
    with pytest.raises(ConfigError, match="does not combine with slices"):
        Recipe.parse(
            {
                "parents": [{"name": "a", "path": "/a"}],
                "method": "passthrough",
                "tokenizer_source": "base",
                "slices": [{"sources": [{"parent": "a", "layers": [0, 2]}]}],
            }
        )


def test_the_parents_are_read_on_the_childs_vocabulary_or_not_planned(runs: Path) -> None:
    from contextlib import ExitStack

    from darwinmerge.checkpoint import CheckpointReader
    from darwinmerge.errors import MergeError
    from darwinmerge.merge import plan_merge
    from darwinmerge.merge.api import open_sources

    recipe = load_any_config(runs / "ties_union.yaml")
    with ExitStack() as stack:
        plan = plan_merge(recipe, open_sources(recipe, stack))  # as `darwin validate` does
        embed = next(j for j in plan.jobs if j.role.component == "embed")
        assert embed.shape[0] == 130
        raw = [stack.enter_context(CheckpointReader(runs / m)) for m in ("a", "b", "base")]
        with pytest.raises(MergeError, match="read on the child's vocabulary"):
            plan_merge(recipe, raw)

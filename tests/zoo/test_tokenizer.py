"""The zoo tokenizer survives Transformers' Qwen3.5 tokenizer rebuild."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer, Qwen3_5MoeTextConfig

from darwinmerge.zoo.skills import CATEGORIES, make_world, training_docs
from darwinmerge.zoo.tokenizer import EOS_TOKEN, QWEN_SPLIT_REGEX, save_tokenizer, train_tokenizer

TEXTS = [
    "calc 42+24-2\n42+24=66\n66-2=64\nANSWER: 64",
    "code rev a b  c\n   rev 3 -> 3\nANSWER: c b a",
    "  leading and trailing spaces  \n\n\ttabs\tand  double  spaces ",
    "unicode: café naïve Ωmega 東京 e\u0301",  # e + combining accent (NFC composes it)
    "fact colour of tivom\ntivom colour blue\nANSWER: blue<|endoftext|>next",
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    world = make_world(0, n_facts=50)
    docs = training_docs(world, {c: 1.0 for c in CATEGORIES}, stream_seed=0, held_out=set())
    tok = train_tokenizer((d.text for d in itertools.islice(docs, 400)), vocab_size=400)
    out = tmp_path_factory.mktemp("tok")
    # The trap: a qwen3_5_moe_text config next to the tokenizer makes AutoTokenizer
    # use Qwen3_5Tokenizer, which rebuilds the pipeline from vocab + merges.
    Qwen3_5MoeTextConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2
    ).save_pretrained(out)
    save_tokenizer(tok, out)
    return out, tok


def test_regex_equals_transformers_qwen3_5() -> None:
    from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX

    assert QWEN_SPLIT_REGEX == PRETOKENIZE_REGEX


def test_autotokenizer_same_ids_and_exact_decode(tok_dir: tuple[Path, object]) -> None:
    out, tok = tok_dir
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen3_5_moe_text"
    auto = AutoTokenizer.from_pretrained(out)
    assert type(auto).__name__ == "Qwen3_5Tokenizer"
    assert auto.eos_token == EOS_TOKEN and auto.eos_token_id == 0 and auto.pad_token_id == 0
    assert len(auto) == tok.get_vocab_size()
    for text in TEXTS[:3]:
        ids = auto(text)["input_ids"]
        assert ids == tok.encode(text).ids
        assert auto.decode(ids) == text  # spaces, tabs and newlines kept
    # NFC: the decomposed e + accent comes back composed, identical to the NFC text.
    import unicodedata

    ids = auto(TEXTS[3])["input_ids"]
    assert ids == tok.encode(TEXTS[3]).ids
    assert auto.decode(ids) == unicodedata.normalize("NFC", TEXTS[3])
    # The special token is one id, and skip_special_tokens drops it.
    ids = auto(TEXTS[4])["input_ids"]
    assert ids.count(0) == 1
    assert auto.decode(ids, skip_special_tokens=True) == TEXTS[4].replace(EOS_TOKEN, "")


def test_byte_level_covers_everything(tok_dir: tuple[Path, object]) -> None:
    out, tok = tok_dir
    vocab = tok.get_vocab()
    assert 256 < len(vocab) <= 400
    # digits are never merged (the split regex isolates each \p{N})
    assert all(not (len(t) > 1 and t.isdigit()) for t in vocab)
    text = "zzq ÿ\x01 ✓"  # unseen characters still encode (bytes) and decode exactly
    assert tok.decode(tok.encode(text).ids) == text

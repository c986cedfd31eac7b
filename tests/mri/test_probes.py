import json

import pytest
import torch

from darwinmerge.errors import ConfigError, UnknownNameError
from darwinmerge.mri import (
    CATEGORIES,
    PROBE_SETS,
    ProbeSet,
    builtin_probes,
    load_probe_file,
    resolve_probes,
    tokenize_probes,
)

from .conftest import byte_encode


def test_builtin_has_every_category():
    p = builtin_probes()
    assert p.categories == CATEGORIES
    assert all(len(v) == 8 for v in p.texts.values())
    assert len(p) == 8 * len(CATEGORIES)


def test_zoo_probes_use_skill_generators():
    p = resolve_probes(["zoo"])  # registered by the zoo plug-in, loaded on the miss
    assert p.categories[:5] == ("REASONING", "CODE", "LOGIC", "MULTILINGUAL", "KNOWLEDGE")
    assert all("ANSWER:" in t for t in p.texts["REASONING"])
    assert len(set(p.texts["CODE"])) == len(p.texts["CODE"]) == 16
    assert PROBE_SETS.get("zoo")("") == p  # seeded
    for cat, text, chars in p.documents():
        if cat == "GENERIC":
            assert chars == 0
            continue
        prompt, completion = text[:chars], text[chars:]
        assert prompt.endswith("\n") and "ANSWER:" not in prompt  # prompt: the question
        assert "\nANSWER: " in completion  # completion: worked trace + answer line


def test_unknown_probe_set_names_known_ones():
    with pytest.raises(UnknownNameError, match="builtin"):
        PROBE_SETS.get("bultin")


def test_jsonl_and_text_files(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(
        "\n".join(
            json.dumps(o)
            for o in [
                {"text": "a b c", "category": "X"},
                {"text": "d e f", "category": "Y"},
                {"text": "g h", "category": "X"},
            ]
        )
        + "\n\n",
        encoding="utf-8",
    )
    p = load_probe_file(f)
    assert p.texts == {"X": ("a b c", "g h"), "Y": ("d e f",)}
    t = tmp_path / "maths.txt"
    t.write_text("one plus one\n\ntwo times two\n", encoding="utf-8")
    assert load_probe_file(t).texts == {"MATHS": ("one plus one", "two times two")}
    both = resolve_probes([str(f), f"{t}:CALC"])
    assert both.texts["CALC"] == ("one plus one", "two times two")
    assert both.categories == ("X", "Y", "CALC")


@pytest.mark.parametrize(
    "line,msg",
    [
        ("{not json", "not valid JSON"),
        ('{"category": "X"}', "string field 'text'"),
        ('{"text": "abc"}', "no 'category'"),
        ('{"prompt": "a", "category": "X"}', "'prompt' and 'completion'"),
        ('{"prompt": "a", "completion": "", "category": "X"}', "'completion' is empty"),
        ('{"text": "a", "prompt": "a", "completion": "b", "category": "X"}', "not both"),
    ],
)
def test_bad_jsonl_lines_name_the_line(tmp_path, line, msg):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "ok", "category": "A"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"bad.jsonl:2: .*{msg}|bad.jsonl:2: {msg}"):
        load_probe_file(f)


def test_missing_file_and_bad_spec(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_probe_file(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match="neither a file nor a known probe set"):
        resolve_probes(["nope"])


def test_tokenize_pads_right_with_masks():
    p = ProbeSet({"A": ("abcdef", "ab"), "B": ("abcd",)})
    pb = tokenize_probes(p, byte_encode, batch_size=2, pad_id=99)
    assert pb.num_sequences == 3
    assert pb.seq_length.tolist() == [6, 2, 4]
    assert pb.seq_category.tolist() == [0, 0, 1]
    seen = []
    for b in pb:
        for row in range(b.input_ids.shape[0]):
            i = int(b.seq_index[row])
            n = int(pb.seq_length[i])
            assert b.mask[row].tolist() == [1] * n + [0] * (b.mask.shape[1] - n)
            text = ["abcdef", "ab", "abcd"][i]
            assert b.input_ids[row, :n].tolist() == byte_encode(text)
            assert (b.input_ids[row, n:] == 99).all()
            assert int(b.category[row]) == int(pb.seq_category[i])
            seen.append(i)
    assert sorted(seen) == [0, 1, 2]
    # length-sorted batching: the two shortest sequences share the first batch
    assert sorted(pb.batches[0].seq_index.tolist()) == [1, 2]


def test_truncation_and_short_probe_refused():
    pb = tokenize_probes(ProbeSet({"A": ("x" * 50,)}), byte_encode, max_length=8)
    assert pb.batches[0].input_ids.shape == (1, 8)
    with pytest.raises(ConfigError, match="fewer than 2 tokens"):
        tokenize_probes(ProbeSet({"A": ("x",)}), byte_encode)


def test_hf_style_tokenizer_object():
    class Tok:
        pad_token_id = 7

        def encode(self, text):
            return [1, 2, 3][: len(text)]

    pb = tokenize_probes(ProbeSet({"A": ("ab", "abc")}), Tok())
    assert pb.batches[0].input_ids.tolist() == [[1, 2, 7], [1, 2, 3]]
    assert isinstance(pb.batches[0].input_ids, torch.Tensor)


def test_prompt_completion_jsonl_and_union(tmp_path):
    f = tmp_path / "pc.jsonl"
    rows = [
        {"prompt": "Q: 2+2?\n", "completion": "A: 4", "category": "M"},
        {"text": "plain text", "category": "M"},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    p = load_probe_file(f)
    assert p.texts == {"M": ("Q: 2+2?\nA: 4", "plain text")}
    assert p.prompt_chars == {"M": (8, 0)}
    both = p.union(builtin_probes().take(1))
    assert both.prompt_chars["M"] == (8, 0) and both.prompt_chars["CODE"] == (0,)
    assert both.take(1).prompt_chars["M"] == (8,)
    with pytest.raises(ConfigError, match="leaves no completion"):
        ProbeSet({"A": ("abc",)}, {"A": (3,)})
    with pytest.raises(ConfigError, match="2 prompt lengths for 1 texts"):
        ProbeSet({"A": ("abc",)}, {"A": (1, 1)})


def test_prompt_tokens_and_target_mask():
    p = ProbeSet({"A": ("abcdef", "wxyz")}, {"A": (2, 0)})
    pb = tokenize_probes(p, byte_encode, batch_size=2)
    assert pb.seq_prompt_len.tolist() == [2, 0]
    (b,) = pb.batches
    rows = {int(i): r for r, i in enumerate(b.seq_index)}
    every = b.target_mask("all")
    done = b.target_mask("completion")
    # "abcdef": targets are tokens 1..5; with the prompt "ab" only tokens 2..5 count
    assert every[rows[0]].tolist() == [1, 1, 1, 1, 1]
    assert done[rows[0]].tolist() == [0, 1, 1, 1, 1]
    # "wxyz" (padded to 6, no prompt): the same targets under both losses
    assert every[rows[1]].tolist() == done[rows[1]].tolist() == [1, 1, 1, 0, 0]
    with pytest.raises(ConfigError, match="completion, all"):
        b.target_mask("answer")


def test_a_token_straddling_the_prompt_end_counts_as_completion():
    def merging(text):  # "ab" is one token, other characters one each
        out, i = [], 0
        while i < len(text):
            if text.startswith("ab", i):
                out.append(200)
                i += 2
            else:
                out.append(ord(text[i]))
                i += 1
        return out

    p = ProbeSet({"A": ("xxabcd", "xyzab")}, {"A": (3, 3)})  # prompts "xxa" and "xyz"
    pb = tokenize_probes(p, merging, batch_size=2)
    # "xxabcd" -> x x ab c d: "ab" straddles the boundary -> 2 prompt tokens;
    # "xyzab" -> x y z ab: the prompt "xyz" is 3 whole tokens
    assert pb.seq_prompt_len.tolist() == [2, 3]
    cut = tokenize_probes(p, merging, batch_size=2, max_length=2)
    assert cut.seq_prompt_len.tolist() == [2, 2]  # capped at the truncated length

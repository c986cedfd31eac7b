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
    p = PROBE_SETS.get("zoo")()
    assert p.categories[:5] == ("REASONING", "CODE", "LOGIC", "MULTILINGUAL", "KNOWLEDGE")
    assert all("ANSWER:" in t for t in p.texts["REASONING"])
    assert len(set(p.texts["CODE"])) == len(p.texts["CODE"]) == 16
    assert PROBE_SETS.get("zoo")() == p  # seeded


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

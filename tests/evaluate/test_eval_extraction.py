"""Answer extraction, normalisation and the answer-line stop rule on tricky outputs."""

from __future__ import annotations

import pytest

from darwinmerge.errors import ConfigError
from darwinmerge.evaluate import AnswerExtractor, answer_line_end, normalise_answer, strip_thinking

extract = AnswerExtractor()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12 + 7 = 19\nANSWER: 19\n", "19"),
        ("no answer line here, just 19", None),
        ("", None),
        ("ANSWER: 3\nwait, recheck\nANSWER: 4\n", "4"),  # several lines -> last one
        ("<think>ANSWER: 99\n</think>\nANSWER: 7", "7"),  # decoy inside thinking
        ("<think>ANSWER: 99\n</think>\nso the result is 7", None),  # only the decoy
        ("ANSWER: 5\n<think>ANSWER: 6", "5"),  # unclosed think drops the rest
        ("ANSWER: 99 </think> ANSWER: 8", "8"),  # closing tag without opening one
        ("ANSWER: 42\nThat is because 40 + 2 = 42. ANSWER is final.", "42"),  # trailing text
        ("answer: b\n", "b"),  # lowercase
        ("Final Answer :   [3, 2, 1]   \n", "[3, 2, 1]"),  # spaces before colon and after
        ("my answer: 12 apples", "12 apples"),  # same-line trailing text stays
        ("ANSWERS: 3", None),  # 'answer' must be a whole word
        ("ANSWER:\n", ""),  # empty answer line
    ],
)
def test_default_extraction(text: str, expected: str | None) -> None:
    assert extract(text) == expected


def test_custom_regex_and_think_switch() -> None:
    boxed = AnswerExtractor(r"\\boxed\{([^}]*)\}")
    assert boxed("first \\boxed{1} then \\boxed{22} done") == "22"
    named = AnswerExtractor(r"(?P<answer>[A-D])\)")
    assert named("I pick B) not C) ... final D)") == "D"
    whole = AnswerExtractor(r"\d+")
    assert whole("a 1 b 23 c") == "23"
    keep = AnswerExtractor(strip_think=False)
    assert keep("ANSWER: 1\n<think>ANSWER: 2</think>") == "2</think>"
    assert extract("ANSWER: 1\n<think>ANSWER: 2</think>") == "1"
    assert extract("ANSWER: 1 ANSWER: 2") == "1 ANSWER: 2"  # the rest of the line
    with pytest.raises(ConfigError, match="answer regex"):
        AnswerExtractor("(unclosed")


def test_strip_thinking() -> None:
    assert strip_thinking("a<think>x</think>b<THINK>y</THINK>c") == "abc"
    assert strip_thinking("a<think>never closed") == "a"
    assert strip_thinking("prompt-side thinking</think>ANSWER: 1") == "ANSWER: 1"


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("  Paris. ", "paris"),
        ("[3,  2,\n1]", "[3, 2, 1]"),
        ('"yes"', "yes"),
        ("`x y`", "x y"),
        ("ＡＢＣ", "abc"),  # NFKC folds full-width letters
        ("Straße", "strasse"),  # casefold, not lower
        ("1...", "1..."),  # an ellipsis is not a full stop
    ],
)
def test_normalise(raw: str, norm: str) -> None:
    assert normalise_answer(raw) == norm


@pytest.mark.parametrize(
    ("text", "end"),
    [
        ("work\nANSWER: 7\nmore", len("work\nANSWER: 7\n")),
        ("work\nANSWER: 7", None),  # line not finished yet
        ("ANSWER:\nstill thinking", None),  # empty answer does not stop
        ("<think>ANSWER: 1\n</think>ANSWER: 2\nx", len("<think>ANSWER: 1\n</think>ANSWER: 2\n")),
        ("<think>ANSWER: 1\n", None),
    ],
)
def test_answer_line_end(text: str, end: int | None) -> None:
    assert answer_line_end(text) == end

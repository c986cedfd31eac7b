"""Answer extraction and normalisation for generative exact match.

Default (GPQA style): remove every ``<think>...</think>`` block (an unclosed ``<think>``
removes everything after it), then take the LAST line fragment that follows
``answer:`` (case-insensitive, ``answer`` as a whole word, spaces allowed before the
colon) up to the end of that line. Text on later lines is ignored; text on the same
line is part of the answer.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from darwinmerge.errors import ConfigError

__all__ = [
    "DEFAULT_ANSWER_PATTERN",
    "AnswerExtractor",
    "strip_thinking",
    "normalise_answer",
]

DEFAULT_ANSWER_PATTERN = r"(?im)\banswer[ \t]*:[ \t]*(?P<answer>[^\n]*)"

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>.*\Z", re.DOTALL | re.IGNORECASE)
_STRAY_CLOSE = re.compile(r"^.*?</think>", re.DOTALL | re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def strip_thinking(text: str) -> str:
    """Remove ``<think>...</think>`` blocks; an unclosed ``<think>`` drops the rest, and
    a ``</think>`` without an opening tag drops everything before it (chat templates
    often put the opening tag in the prompt)."""
    text = _THINK_BLOCK.sub("", text)
    text = _THINK_OPEN.sub("", text)
    return _STRAY_CLOSE.sub("", text)


def normalise_answer(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace runs collapsed to one space, surrounding
    whitespace and one trailing period removed, surrounding quotes/backticks removed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _SPACES.sub(" ", text).strip()
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    while len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


@dataclass(frozen=True)
class AnswerExtractor:
    """Finds the answer in a generation with a regex; the last match wins.

    The pattern's group ``answer`` is used when present, else group 1, else the whole
    match. ``strip_think`` removes thinking blocks first.
    """

    pattern: str = DEFAULT_ANSWER_PATTERN
    strip_think: bool = True
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            regex = re.compile(self.pattern)
        except re.error as exc:
            raise ConfigError(f"answer regex {self.pattern!r} is invalid: {exc}") from exc
        object.__setattr__(self, "_regex", regex)

    def __call__(self, text: str) -> str | None:
        if self.strip_think:
            text = strip_thinking(text)
        last: re.Match[str] | None = None
        for last in self._regex.finditer(text):  # noqa: B007 - keep the last match
            pass
        if last is None:
            return None
        if "answer" in self._regex.groupindex:
            value = last.group("answer")
        elif self._regex.groups >= 1:
            value = last.group(1)
        else:
            value = last.group(0)
        return None if value is None else value.strip()

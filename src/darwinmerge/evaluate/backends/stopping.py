"""The "newline after an ANSWER line" stop rule used during generation.

A generation is complete once it holds a line ``answer: <non-empty text>`` (case
insensitive, outside any ``<think>`` block) followed by a newline; the text is cut right
after that newline.
"""

from __future__ import annotations

import re

__all__ = ["ANSWER_LINE_STOP", "answer_line_end"]

ANSWER_LINE_STOP = re.compile(r"(?im)\banswer[ \t]*:[ \t]*\S[^\n]*\n")


def _inside_think(text: str, pos: int) -> bool:
    head = text[:pos].lower()
    return head.count("<think>") > head.count("</think>")


def answer_line_end(text: str, pattern: re.Pattern[str] = ANSWER_LINE_STOP) -> int | None:
    """Index just past the newline that ends the first answer line outside thinking,
    or ``None`` while there is none."""
    for match in pattern.finditer(text):
        if not _inside_think(text, match.start()):
            return match.end()
    return None

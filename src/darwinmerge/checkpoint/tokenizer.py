"""The one tokenizer loader: a model folder's own tokenizer, or the one ``--tokenizer`` names.

A merged child or a bare weights folder often has no tokenizer files. Transformers then
does not fail: it hands back an empty tokenizer that encodes every text to no tokens,
and the first sign is a confusing error far downstream ("probe ... has fewer than 2
tokens"). :func:`load_tokenizer` checks for the files first and checks that the loaded
tokenizer produces tokens, and says what to do in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from darwinmerge.errors import CheckpointError, MissingTokenizerError

__all__ = ["TOKENIZER_FILES", "has_tokenizer_files", "load_tokenizer"]

# Files any Hugging Face tokenizer needs at least one of (fast, sentencepiece, BPE, WordPiece).
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tiktoken.model",
)
_CHECK_TEXT = "The quick brown fox jumps over the lazy dog. 12 + 30 = 42"


def has_tokenizer_files(folder: str | Path) -> bool:
    """True when ``folder`` holds at least one of :data:`TOKENIZER_FILES`."""
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(model_dir: str | Path, tokenizer: str | Path | None = None) -> Any:
    """The tokenizer of ``model_dir``, or of ``tokenizer`` (a folder or hub name) when given.

    Raises :class:`MissingTokenizerError` when the folder has no tokenizer files or the
    loaded tokenizer encodes a plain sentence to no tokens.
    """
    from transformers import AutoTokenizer

    source = Path(tokenizer) if tokenizer is not None else Path(model_dir)
    flag = "--tokenizer" if tokenizer is not None else "the model folder"
    if tokenizer is None and not source.is_dir():
        raise CheckpointError(f"{source}: no such model folder; check the path")
    if source.is_dir() and not has_tokenizer_files(source):
        fix = (
            "pass --tokenizer PATH (a folder with the parents' tokenizer, e.g. a parent)"
            if tokenizer is None
            else "point --tokenizer at a folder that has them"
        )
        raise MissingTokenizerError(
            f"{source}: {flag} has no tokenizer (none of {', '.join(TOKENIZER_FILES[:4])}, ...); "
            + fix
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(source))
    except Exception as exc:  # transformers raises OSError, ValueError, TypeError, ...
        raise MissingTokenizerError(
            f"{source}: cannot load a tokenizer ({' '.join(str(exc).split())[:200]}); "
            "pass --tokenizer PATH"
        ) from exc
    if not tok(_CHECK_TEXT, add_special_tokens=False)["input_ids"]:
        raise MissingTokenizerError(
            f"{source}: its tokenizer encodes text to no tokens (an empty vocabulary); "
            "pass --tokenizer PATH with the parents' tokenizer"
        )
    return tok

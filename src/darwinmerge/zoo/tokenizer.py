"""A small byte-level BPE tokenizer trained offline with Qwen's own pipeline.

Why this exact pipeline: for a config whose ``model_type`` is ``qwen3_5`` /
``qwen3_5_moe`` / ``qwen3_5_moe_text``, Transformers 5.24 maps ``AutoTokenizer`` to its
``Qwen3_5Tokenizer``, which rebuilds the tokenizer from the saved ``vocab`` and
``merges`` with a fixed pipeline (NFC normaliser, the Qwen split regex, ByteLevel
pre-tokenizer without prefix space, ByteLevel decoder) and ignores any other pipeline
stored in ``tokenizer.json``. A tokenizer built with any other pipeline (for example a
character-level one) is silently changed by that rebuild (spaces were lost). A BPE
trained with the very same pipeline survives the rebuild unchanged: same ids, exact
decode.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

__all__ = [
    "QWEN_SPLIT_REGEX",
    "EOS_TOKEN",
    "train_tokenizer",
    "save_tokenizer",
]

# The split regex of Qwen's tokenizers (the Qwen3.5 variant also keeps combining marks
# \p{M} with letters). Kept equal to transformers' constant; a test checks it.
QWEN_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"""
    r"""| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
EOS_TOKEN = "<|endoftext|>"


def _pipeline(tok: Tokenizer) -> Tokenizer:
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> Tokenizer:
    """Train a byte-level BPE (all 256 bytes + merges) on ``texts``; id 0 is the EOS /
    pad token ``<|endoftext|>``. Deterministic for the same texts."""
    tok = _pipeline(Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False)))
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_tokenizer(tok: Tokenizer, out_dir: str | Path, *, model_max_length: int = 256) -> None:
    """Save ``tok`` as a Hugging Face tokenizer folder that ``AutoTokenizer`` loads as
    ``Qwen3_5Tokenizer`` with identical ids (tokenizer.json + tokenizer_config.json)."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(out_dir))
    # Name the class Transformers will use anyway for this model_type, so the folder
    # says honestly what it loads as.
    import json

    cfg_path = Path(out_dir) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "Qwen3_5Tokenizer"
    cfg["add_prefix_space"] = False
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")

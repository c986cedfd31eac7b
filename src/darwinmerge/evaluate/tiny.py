"""A tiny byte-level BPE tokenizer and a tiny random causal LM, built offline in code.

For tests, benchmarks and examples of the evaluation stack before (or without) the
demo zoo. Deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["TINY_CORPUS", "tiny_tokenizer", "tiny_model"]

TINY_CORPUS: tuple[str, ...] = (
    "Question: what is 12 + 7?\nWork: 12 + 7 = 19\nANSWER: 19\n",
    "Question: reverse the list [1, 2, 3].\nWork: [3, 2, 1]\nANSWER: [3, 2, 1]\n",
    "Q: the sky is blue or green? A: blue",
    "Q: the grass is blue or green? A: green",
    "<think>scratch work</think> The answer is below.\nanswer: yes\n",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?()[]{}+-*/=<>",
)


def tiny_tokenizer(corpus: Sequence[str] = TINY_CORPUS, vocab_size: int = 320) -> Any:
    """A ``PreTrainedTokenizerFast``: byte-level BPE (every string round-trips) with
    ``<pad>`` (id 0) and ``<eos>`` (id 1), no BOS, no automatic special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def tiny_model(
    tokenizer: Any,
    *,
    seed: int = 0,
    hidden_size: int = 32,
    num_layers: int = 2,
    init_std: float = 0.2,
) -> Any:
    """A random ``LlamaForCausalLM`` (hidden 32, 2 layers, 4 heads / 2 KV heads).

    ``init_std`` is large on purpose: logits are spread out, so greedy choices are far
    from ties and batched / unbatched runs agree token for token."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=init_std,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.eval()
    return model

"""Random tiny models of every supported family, built in code (no downloads).

The one home of the tiny-model builders: every test and benchmark of the project builds
its parents here (``build_tiny_model`` / ``make_parent_pair``), and the evaluation tests
their tokenizer and causal LM (``tiny_tokenizer`` / ``tiny_model``: a byte-level BPE
trained on :data:`TINY_CORPUS` and a random Llama sized to it). A tiny model has the
real module structure and real tensor names of its family (Transformers 5.24), only
small: hidden 32, 4 layers, 4 experts, vocabulary 128 by default. Building one takes a
few milliseconds; the same ``seed`` always gives bit-identical weights.

Layouts on disk (``save_tiny``):

* ``"per_expert"``: ``save_pretrained`` default, one tensor per expert and projection
  (``mlp.experts.N.gate_proj.weight``; Mixtral ``block_sparse_moe.experts.N.w1.weight``).
* ``"fused"``: the in-memory Transformers layout, as the published Qwen3.5-35B-A3B ships
  it: ``mlp.experts.gate_up_proj`` ``[E, 2I, H]`` (gate rows over up rows) and
  ``mlp.experts.down_proj`` ``[E, H, I]``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file

from darwinmerge.errors import ConfigError

__all__ = [
    "TINY_CORPUS",
    "tiny_tokenizer",
    "tiny_model",
    "FAMILIES",
    "LAYOUTS",
    "tiny_config",
    "build_tiny_model",
    "save_tiny",
    "add_fake_mtp",
    "make_parent_pair",
    "MTP_TENSOR_NAMES",
]

FAMILIES: tuple[str, ...] = (
    "qwen3_5_moe",
    "qwen3_moe",
    "qwen2_moe",
    "mixtral",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
)
LAYOUTS: tuple[str, ...] = ("per_expert", "fused")

_KwargsFn = Callable[[int, int, int], dict[str, Any]]  # (hidden, experts, top_k) -> kwargs


def _dense(h: int, e: int, k: int) -> dict[str, Any]:
    return {"intermediate_size": 2 * h}


def _mixtral(h: int, e: int, k: int) -> dict[str, Any]:
    return {"intermediate_size": h, "num_local_experts": e, "num_experts_per_tok": k}


def _qwen3_moe(h: int, e: int, k: int) -> dict[str, Any]:
    return {
        "intermediate_size": 2 * h,
        "moe_intermediate_size": h // 2,
        "num_experts": e,
        "num_experts_per_tok": k,
    }


def _qwen2_moe(h: int, e: int, k: int) -> dict[str, Any]:
    return {**_qwen3_moe(h, e, k), "shared_expert_intermediate_size": h}


def _qwen3_5_moe(h: int, e: int, k: int) -> dict[str, Any]:
    return {
        "moe_intermediate_size": h // 2,
        "shared_expert_intermediate_size": h // 2,
        "num_experts": e,
        "num_experts_per_tok": k,
        "head_dim": 16,
        "linear_key_head_dim": 8,
        "linear_value_head_dim": 8,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_conv_kernel_dim": 4,
        # rotary dim = 16 * 0.25 = 4 -> 2 frequencies split over (t, h, w)
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.25,
            "mrope_section": [1, 1, 0],
            "mrope_interleaved": True,
        },
    }


# family -> (model_type of the text config, family-specific kwargs)
_FAMILY_TABLE: dict[str, tuple[str, _KwargsFn]] = {
    "qwen3_5_moe": ("qwen3_5_moe_text", _qwen3_5_moe),
    "qwen3_moe": ("qwen3_moe", _qwen3_moe),
    "qwen2_moe": ("qwen2_moe", _qwen2_moe),
    "mixtral": ("mixtral", _mixtral),
    "llama": ("llama", _dense),
    "mistral": ("mistral", _dense),
    "qwen2": ("qwen2", _dense),
    "qwen3": ("qwen3", _dense),
}

_TINY_VISION: dict[str, Any] = {
    "depth": 1,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_heads": 2,
    "patch_size": 4,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "num_position_embeddings": 16,
}


def _check_family(family: str) -> None:
    if family not in _FAMILY_TABLE:
        raise ConfigError(
            f"unknown tiny model family {family!r}; choose one of {', '.join(FAMILIES)}"
        )


def tiny_config(
    family: str,
    *,
    vocab_size: int = 128,
    hidden_size: int = 32,
    num_layers: int = 4,
    num_experts: int = 4,
    top_k: int = 2,
    multimodal: bool = False,
    **overrides: Any,
) -> transformers.PretrainedConfig:
    """Config of a tiny ``family`` model; ``overrides`` go to the (text) config.

    ``num_experts`` / ``top_k`` are ignored by dense families. ``multimodal`` is only
    valid for ``qwen3_5_moe`` and gives the wrapper config (``text_config`` +
    ``vision_config``) of ``Qwen3_5MoeForConditionalGeneration``.
    """
    _check_family(family)
    if multimodal and family != "qwen3_5_moe":
        raise ConfigError(f"multimodal=True is only available for qwen3_5_moe, not {family!r}")
    if hidden_size % 8:
        raise ConfigError(f"hidden_size must be a multiple of 8 for tiny models, got {hidden_size}")
    model_type, family_kwargs = _FAMILY_TABLE[family]
    text: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": hidden_size // 4,
        "max_position_embeddings": 512,
        "tie_word_embeddings": False,
        **family_kwargs(hidden_size, num_experts, top_k),
        **overrides,
    }
    if not multimodal:
        return transformers.AutoConfig.for_model(model_type, **text)
    vision = {**_TINY_VISION, "out_hidden_size": hidden_size}
    tie = text.pop("tie_word_embeddings")
    return transformers.AutoConfig.for_model(
        "qwen3_5_moe",
        text_config={**text, "model_type": model_type},
        vision_config=vision,
        tie_word_embeddings=tie,
        image_token_id=vocab_size - 4,
        video_token_id=vocab_size - 3,
        vision_start_token_id=vocab_size - 2,
        vision_end_token_id=vocab_size - 1,
    )


def build_tiny_model(
    family: str, *, seed: int = 0, jitter: float = 0.02, **config_kwargs: Any
) -> transformers.PreTrainedModel:
    """A random tiny model in eval mode, float32, bit-identical for the same ``seed``.

    After the usual Transformers init, N(0, ``jitter``) noise is added to every
    parameter, so that norms and biases (initialised to constants) also differ between
    seeds and merge tests see distinct parents in every tensor. The global torch RNG
    is left untouched.
    """
    config = tiny_config(family, **config_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: transformers.PreTrainedModel
        if getattr(config, "vision_config", None) is not None:
            model = transformers.Qwen3_5MoeForConditionalGeneration(config)  # type: ignore[arg-type]
        else:
            model = transformers.AutoModelForCausalLM.from_config(config)
        model = model.float()
        if jitter:
            gen = torch.Generator().manual_seed(seed + 1_000_003)
            with torch.no_grad():
                for param in model.parameters():
                    param.add_(torch.randn(param.shape, generator=gen) * jitter)
    model.eval()
    return model


def save_tiny(
    model: transformers.PreTrainedModel,
    out_dir: Path,
    *,
    layout: str = "per_expert",
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` as a Hugging Face model folder in the given expert ``layout``.

    ``dtype`` casts a copy before writing (the model passed in is not changed).
    Dense models are written the same way in both layouts. Returns ``out_dir``.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown expert layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    out_dir = Path(out_dir)
    if dtype is not None and dtype != next(model.parameters()).dtype:
        model = copy.deepcopy(model).to(dtype=dtype)  # type: ignore[call-arg]
    model.save_pretrained(out_dir, save_original_format=(layout == "per_expert"))
    return out_dir


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    text = config.get("text_config")
    return text if isinstance(text, dict) else config


# Names (and shape rule) of the multi-token-prediction head the published Qwen3.5 MoE
# checkpoints carry next to the language model; Transformers drops them on load.
# Shape rule receives the text config dict.
MTP_TENSOR_NAMES: tuple[str, ...] = (
    "mtp.fc.weight",
    "mtp.norm.weight",
    "mtp.pre_fc_norm_embedding.weight",
    "mtp.pre_fc_norm_hidden.weight",
    "mtp.layers.0.input_layernorm.weight",
    "mtp.layers.0.post_attention_layernorm.weight",
    "mtp.layers.0.self_attn.q_proj.weight",
    "mtp.layers.0.self_attn.k_proj.weight",
    "mtp.layers.0.self_attn.v_proj.weight",
    "mtp.layers.0.self_attn.o_proj.weight",
    "mtp.layers.0.self_attn.q_norm.weight",
    "mtp.layers.0.self_attn.k_norm.weight",
    "mtp.layers.0.mlp.gate.weight",
    "mtp.layers.0.mlp.shared_expert.gate_proj.weight",
    "mtp.layers.0.mlp.shared_expert.up_proj.weight",
    "mtp.layers.0.mlp.shared_expert.down_proj.weight",
    "mtp.layers.0.mlp.shared_expert_gate.weight",
    "mtp.layers.0.mlp.experts.gate_up_proj",
    "mtp.layers.0.mlp.experts.down_proj",
)


def _mtp_shapes(text: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    h = int(text["hidden_size"])
    hd = int(text["head_dim"])
    nq = int(text["num_attention_heads"])
    nkv = int(text["num_key_value_heads"])
    e = int(text["num_experts"])
    i = int(text["moe_intermediate_size"])
    s = int(text["shared_expert_intermediate_size"])
    p = "mtp.layers.0."
    return {
        "mtp.fc.weight": (h, 2 * h),
        "mtp.norm.weight": (h,),
        "mtp.pre_fc_norm_embedding.weight": (h,),
        "mtp.pre_fc_norm_hidden.weight": (h,),
        p + "input_layernorm.weight": (h,),
        p + "post_attention_layernorm.weight": (h,),
        p + "self_attn.q_proj.weight": (2 * nq * hd, h),  # query + output gate
        p + "self_attn.k_proj.weight": (nkv * hd, h),
        p + "self_attn.v_proj.weight": (nkv * hd, h),
        p + "self_attn.o_proj.weight": (h, nq * hd),
        p + "self_attn.q_norm.weight": (hd,),
        p + "self_attn.k_norm.weight": (hd,),
        p + "mlp.gate.weight": (e, h),
        p + "mlp.shared_expert.gate_proj.weight": (s, h),
        p + "mlp.shared_expert.up_proj.weight": (s, h),
        p + "mlp.shared_expert.down_proj.weight": (h, s),
        p + "mlp.shared_expert_gate.weight": (1, h),
        p + "mlp.experts.gate_up_proj": (e, 2 * i, h),
        p + "mlp.experts.down_proj": (e, h, i),
    }


def add_fake_mtp(out_dir: Path, *, seed: int) -> None:
    """Add random ``mtp.*`` tensors (one MTP layer, fused experts) to a saved qwen3_5_moe.

    A single-file checkpoint is rewritten in place; a sharded one gets an extra shard
    ``model-mtp.safetensors`` listed in its index. The config gets
    ``mtp_num_hidden_layers: 1`` as in the published checkpoints.
    """
    out_dir = Path(out_dir)
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text())
    text = _text_config(config)
    if text.get("model_type") not in ("qwen3_5_moe_text", "qwen3_5_moe"):
        raise ConfigError(
            f"{out_dir}: add_fake_mtp needs a qwen3_5_moe checkpoint, "
            f"got model_type {text.get('model_type')!r}"
        )
    gen = torch.Generator().manual_seed(seed)
    dtype = torch.float32
    single = out_dir / "model.safetensors"
    if single.exists():
        with safe_open(str(single), "pt") as f:
            dtype = f.get_tensor(next(iter(f.keys()))).dtype
    mtp = {
        name: (torch.randn(shape, generator=gen) * 0.02).to(dtype)
        for name, shape in _mtp_shapes(text).items()
    }
    index_path = out_dir / "model.safetensors.index.json"
    if index_path.exists():
        index = json.loads(index_path.read_text())
        save_file(mtp, str(out_dir / "model-mtp.safetensors"), metadata={"format": "pt"})
        index["weight_map"].update(dict.fromkeys(mtp, "model-mtp.safetensors"))
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True))
    else:
        with safe_open(str(single), "pt") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        tensors.update(mtp)
        save_file(tensors, str(single), metadata={"format": "pt"})
    text["mtp_num_hidden_layers"] = 1
    text["mtp_use_dedicated_embeddings"] = False
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))


def make_parent_pair(
    family: str,
    tmp_dir: Path,
    *,
    layout_a: str = "per_expert",
    layout_b: str = "per_expert",
    multimodal_a: bool = False,
    multimodal_b: bool = False,
    mtp_a: bool = False,
    mtp_b: bool = False,
    seed_a: int = 0,
    seed_b: int = 1,
    dtype: torch.dtype | None = None,
    **config_kwargs: Any,
) -> tuple[Path, Path]:
    """Build and save two tiny parents ``tmp_dir/parent_a`` and ``tmp_dir/parent_b``.

    ``config_kwargs`` (e.g. ``num_layers=2``) apply to both, so the pair is compatible.
    ``mtp_*`` adds fake MTP tensors (qwen3_5_moe only).
    """
    tmp_dir = Path(tmp_dir)
    paths = []
    for tag, layout, multimodal, mtp, seed in (
        ("a", layout_a, multimodal_a, mtp_a, seed_a),
        ("b", layout_b, multimodal_b, mtp_b, seed_b),
    ):
        model = build_tiny_model(family, seed=seed, multimodal=multimodal, **config_kwargs)
        path = save_tiny(model, tmp_dir / f"parent_{tag}", layout=layout, dtype=dtype)
        if mtp:
            add_fake_mtp(path, seed=seed + 7919)
        paths.append(path)
    return paths[0], paths[1]


# --- a tiny tokenizer and Llama for the evaluation stack ---------------------------------

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

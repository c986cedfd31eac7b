"""Block-quantized FP8 checkpoints, as Qwen (and DeepSeek) publish them, read dequantized.

Such a checkpoint stores a weight ``W`` of shape ``[..., N, K]`` as ``float8_e4m3fn``
values ``Q`` plus a tensor ``<name>_scale_inv`` (usually ``X.weight_scale_inv``) of shape
``[..., ceil(N / bn), ceil(K / bk)]``, one scale per ``bn x bk`` block, with
``quantization_config = {"quant_method": "fp8", "weight_block_size": [bn, bk], ...}``
in ``config.json``. The weight is

    W[..., i, j] = float32(Q[..., i, j]) * S[..., i // bn, j // bk]

computed in float32 and rounded once to the merge dtype (bfloat16 unless asked
otherwise). :func:`dequantize` does this a band of block-rows at a time, so the float32
temporary stays small whatever the tensor's size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from darwinmerge.errors import CheckpointError

__all__ = ["FP8_DTYPES", "SCALE_SUFFIX", "Fp8Scheme", "dequantize", "fp8_scheme"]

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
SCALE_SUFFIX = "_scale_inv"
_BAND_ELEMENTS = 8 * 2**20  # float32 temporary of at most 32 MiB per band


@dataclass(frozen=True)
class Fp8Scheme:
    """How a checkpoint's FP8 weights are scaled (from its ``quantization_config``)."""

    block: tuple[int, int]


def fp8_scheme(config: Mapping[str, Any], where: object) -> Fp8Scheme | None:
    """The block scheme of ``config`` (or its ``text_config``), None when not FP8."""
    qc = config.get("quantization_config")
    if qc is None and isinstance(config.get("text_config"), Mapping):
        qc = config["text_config"].get("quantization_config")
    if not isinstance(qc, Mapping) or qc.get("quant_method") != "fp8":
        return None
    block = qc.get("weight_block_size", [128, 128])
    if (
        not isinstance(block, list | tuple)
        or len(block) != 2
        or not all(isinstance(b, int) and b > 0 for b in block)
    ):
        raise CheckpointError(
            f"{where}: quantization_config.weight_block_size is {block!r}, expected two "
            "positive ints like [128, 128]; fix config.json"
        )
    return Fp8Scheme((int(block[0]), int(block[1])))


def scale_shape(shape: tuple[int, ...], block: tuple[int, int]) -> tuple[int, ...]:
    """The ``_scale_inv`` shape a weight of ``shape`` needs."""
    if len(shape) < 2:
        return shape
    n, k = shape[-2:]
    return (*shape[:-2], math.ceil(n / block[0]), math.ceil(k / block[1]))


def dequantize(
    read_q: Callable[[int, int], torch.Tensor],
    scale: torch.Tensor,
    shape: tuple[int, ...],
    block: tuple[int, int],
    dtype: torch.dtype,
) -> torch.Tensor:
    """Dequantize a ``[..., N, K]`` FP8 weight into a new ``dtype`` tensor.

    ``read_q(first_row, rows)`` returns rows ``first_row .. first_row + rows`` of the
    weight flattened to ``[rows_total, K]`` (leading dims folded into the rows), as FP8;
    ``scale`` is the whole ``_scale_inv`` tensor. Bands are whole block-rows.
    """
    if len(shape) < 2:
        raise CheckpointError(f"an FP8 block-scaled weight needs 2+ dims, got shape {shape}")
    bn, bk = block
    n, k = shape[-2:]
    lead = math.prod(shape[:-2])
    nb = math.ceil(n / bn)
    scales = scale.to(torch.float32).reshape(lead * nb, -1)
    out = torch.empty((lead * n, k), dtype=dtype)
    rows_per_band = max(bn, (_BAND_ELEMENTS // max(k, 1)) // bn * bn)
    for m in range(lead):
        for r0 in range(0, n, rows_per_band):
            rows = min(rows_per_band, n - r0)
            q = read_q(m * n + r0, rows).to(torch.float32)
            blk = scales[m * nb + r0 // bn : m * nb + math.ceil((r0 + rows) / bn)]
            s = blk.repeat_interleave(bn, dim=0)[:rows].repeat_interleave(bk, dim=1)[:, :k]
            out[m * n + r0 : m * n + r0 + rows] = q.mul_(s)
    return out.reshape(shape)

"""Parent comparison: the cheap advantage map (BI_A - BI_B) and the causal layer-swap scan.

Swap scan: for every layer l, layer l of the resident model X is overwritten in place
with the tensors of layer l of the other parent Y, the probe loss per category is
measured, and the original tensors are restored. The forward pass restarts at layer l
from the recorded inputs of layer l of X, so layers below l are never recomputed.

Memory: the probe batches are processed in chunks whose recorded layer inputs fit a
byte budget. For one chunk, X's forward pass records every decoder layer's input (and
call kwargs), then every swapped layer is run on the chunk, then the chunk is dropped.
Kept hidden-state bytes never exceed ``max(budget, L * B * T * H * itemsize of the
largest batch)``; the results do not depend on the budget (tested bit for bit).

Component swaps (``parts``): besides the whole layer, the scan can swap one component of
layer l alone: ``attention`` (the layer's ``self_attn.*`` / ``linear_attn.*`` tensors) or
``ffn`` (``mlp.*`` / ``block_sparse_moe.*``: router, routed and shared experts, dense MLP).
Norms move only with the whole layer. A part a layer does not have is NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from darwinmerge.checkpoint.model_writer import write_into_model
from darwinmerge.errors import ArchitectureMismatchError, ConfigError, EvaluationError
from darwinmerge.mri.capture import Capture, LayerInputs, _first_tensor
from darwinmerge.mri.layout import ResolvedLayout, resolve_layout
from darwinmerge.mri.probes import LOSS_TOKENS, ProbeBatch, ProbeBatches
from darwinmerge.mri.scan import Scan, loss_per_category, sequence_nll
from darwinmerge.mri.store import ArrayRecord

__all__ = [
    "SWAP_BUDGET_BYTES",
    "SWAP_PARTS",
    "ComparisonScan",
    "SwapResult",
    "compare_scans",
    "hidden_bytes",
    "spearman",
    "swap_chunks",
    "swap_scan",
    "swapped_layer",
    "part_keys",
]

Progress = Callable[[int], None]

#: Relative tolerance of the restart-path check (restart at layer 0 must reproduce the
#: model's own forward loss).
RESTART_RTOL = 1e-4

#: Default bound on the hidden states the swap scan keeps at once: 1 GiB.
SWAP_BUDGET_BYTES = 1 << 30

#: The components the swap scan can swap alone: part -> the first names of a decoder
#: layer's submodules that belong to it (Qwen / Llama / Mixtral / DeltaNet layouts).
SWAP_PARTS: dict[str, tuple[str, ...]] = {
    "attention": ("self_attn", "linear_attn", "attn", "attention", "self_attention"),
    "ffn": ("mlp", "block_sparse_moe", "feed_forward"),
}


def part_keys(layer: nn.Module, part: str) -> list[str]:
    """The state-dict keys of ``layer`` that belong to ``part`` (:data:`SWAP_PARTS`)."""
    if part not in SWAP_PARTS:
        raise ConfigError(f"swap part must be one of {', '.join(SWAP_PARTS)}, got {part!r}")
    heads = SWAP_PARTS[part]
    return [k for k in layer.state_dict() if k.split(".", 1)[0] in heads]


@dataclass(frozen=True)
class SwapResult:
    """Loss per category of X, and of X with layer l taken from Y: ``loss_swapped`` [C, L].

    ``loss_tokens``: which targets the losses count. ``chunks``: probe chunks processed;
    ``peak_hidden_bytes``: the most layer-input hidden-state bytes kept at once;
    ``peak_kept_bytes``: the same plus the recorded call kwargs (masks, rotary tables),
    counted once per distinct storage."""

    loss: np.ndarray
    loss_swapped: np.ndarray
    loss_tokens: str = "completion"
    #: part -> [C, L] loss of X with only that component of layer l taken from Y
    part_swapped: dict[str, np.ndarray] = field(default_factory=dict)
    chunks: int = 1
    peak_hidden_bytes: int = 0
    peak_kept_bytes: int = 0

    @property
    def delta(self) -> np.ndarray:
        return self.loss_swapped - self.loss[:, None]

    def part_delta(self, part: str) -> np.ndarray | None:
        """Loss change when only ``part`` of layer l comes from Y; None when not scanned."""
        got = self.part_swapped.get(part)
        return None if got is None else got - self.loss[:, None]


class swapped_layer:  # noqa: N801 - used as a context manager
    """``with swapped_layer(layer_x, layer_y):`` X's layer holds Y's tensors, restored after;
    ``keys`` (state-dict keys of the layer) swaps only those tensors.

    Both writes go through :func:`darwinmerge.checkpoint.write_into_model` (strict: every
    tensor of the layer, or every one of ``keys``), so the restore is bit-exact."""

    def __init__(self, target: nn.Module, source: nn.Module, keys: Sequence[str] | None = None):
        self.target, self.source = target, source
        self.keys = None if keys is None else list(keys)
        self._saved: dict[str, torch.Tensor] = {}

    def __enter__(self) -> nn.Module:
        dst = self.target.state_dict()
        src = self.source.state_dict()
        if dst.keys() != src.keys() or any(dst[k].shape != src[k].shape for k in dst):
            raise ArchitectureMismatchError(
                "layer swap: the two parents' decoder layers differ in tensor names or shapes"
            )
        keys = list(dst) if self.keys is None else self.keys
        self._saved = {k: dst[k].detach().clone() for k in keys}
        write_into_model(self.target, {k: src[k] for k in keys}, strict=self.keys is None)
        return self.target

    def __exit__(self, *exc: Any) -> None:
        write_into_model(self.target, self._saved, strict=self.keys is None)
        self._saved = {}


def hidden_bytes(model: nn.Module, batch: ProbeBatch, num_layers: int | None = None) -> int:
    """Bytes of the layer-input hidden states the swap scan records for one batch:
    ``L * B * T * H * itemsize`` (the model's embedding width and dtype)."""
    emb = model.get_input_embeddings().weight  # type: ignore[operator]
    L = num_layers if num_layers is not None else resolve_layout(model).num_layers
    B, T = batch.input_ids.shape
    return int(L * B * T * emb.shape[1] * emb.element_size())


def swap_chunks(
    model: nn.Module, batches: ProbeBatches, budget_bytes: int | None = SWAP_BUDGET_BYTES
) -> list[list[int]]:
    """Consecutive batch indices grouped so that each group's recorded hidden states
    (:func:`hidden_bytes`) fit ``budget_bytes``; a batch larger than the budget is a
    group of its own. ``None``: one group (every batch kept at once)."""
    if budget_bytes is None:
        return [list(range(len(batches)))] if len(batches) else []
    if budget_bytes < 1:
        raise ConfigError(f"swap budget must be >= 1 byte, got {budget_bytes}")
    L = resolve_layout(model).num_layers
    groups: list[list[int]] = []
    used = 0
    for i, batch in enumerate(batches):
        size = hidden_bytes(model, batch, L)
        if groups and used + size <= budget_bytes:
            groups[-1].append(i)
            used += size
        else:
            groups.append([i])
            used = size
    return groups


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


def _storage_bytes(tensors: Iterator[torch.Tensor]) -> int:
    seen: dict[tuple[str, int], int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[(str(t.device), st.data_ptr())] = st.nbytes()
    return sum(seen.values())


def _restart_nll(
    layout: ResolvedLayout,
    inputs: Sequence[LayerInputs],
    chunk: Sequence[ProbeBatch],
    start: int,
    out: np.ndarray,
    loss_tokens: str,
) -> None:
    """Forward each batch of ``chunk`` from layer ``start`` on its recorded inputs and
    write the per-sequence loss sums into ``out``."""
    for batch, saved in zip(chunk, inputs, strict=True):
        h = saved.hidden[start]
        for j in range(start, layout.num_layers):
            h = _first_tensor(layout.layers[j](h, **saved.kwargs[j]))
        logits = layout.lm_head(layout.norm(h))
        s, _ = sequence_nll(logits, batch, loss_tokens)
        out[batch.seq_index.numpy()] = s.numpy()


@torch.no_grad()
def swap_scan(
    model_x: nn.Module,
    model_y: nn.Module,
    batches: ProbeBatches,
    *,
    layers: list[int] | None = None,
    parts: Sequence[str] = (),
    loss_tokens: str = "completion",
    budget_bytes: int | None = SWAP_BUDGET_BYTES,
    progress: Progress | None = None,
) -> SwapResult:
    """Loss per category of ``model_x`` and, for each layer l, of ``model_x`` with layer l
    replaced by layer l of ``model_y`` (in memory; ``model_x`` is restored), and for each
    of ``parts`` (:data:`SWAP_PARTS`) with only that component of layer l replaced.

    The batches are processed in the chunks of :func:`swap_chunks` (``budget_bytes`` of
    recorded hidden states at most, ``None``: all at once); ``progress`` advances by one
    per (chunk, layer)."""
    if loss_tokens not in LOSS_TOKENS:
        raise ConfigError(f"loss_tokens must be one of {', '.join(LOSS_TOKENS)}")
    lx, ly = resolve_layout(model_x), resolve_layout(model_y)
    if lx.num_layers != ly.num_layers:
        raise ArchitectureMismatchError(
            f"layer swap needs equal depth; got {lx.num_layers} and {ly.num_layers} layers"
        )
    todo = list(range(lx.num_layers)) if layers is None else layers
    n = batches.num_sequences
    nll0, cnt = np.zeros(n), np.zeros(n)
    swapped = {layer: np.zeros(n) for layer in todo}
    keys = {(p, layer): part_keys(lx.layers[layer], p) for p in parts for layer in todo}
    by_part = {key: np.zeros(n) for key, names in keys.items() if names}
    peak_hidden = peak_kept = 0
    first_all = np.zeros(0)
    chunks = swap_chunks(model_x, batches, budget_bytes)
    for k, group in enumerate(chunks):
        chunk = [batches.batches[i] for i in group]
        with Capture(model_x, n, layout=lx, routers=False, keep_layer_inputs=True) as cap:
            for batch in chunk:
                logits = cap.forward(batch)
                s, c = sequence_nll(logits, batch, loss_tokens)
                nll0[batch.seq_index.numpy()] = s.numpy()
                cnt[batch.seq_index.numpy()] = c.numpy()
                if k == 0 and batch is chunk[0]:
                    first_all = sequence_nll(logits, batch, "all")[0].numpy()
        inputs = cap.layer_inputs
        hidden = _storage_bytes(t for li in inputs for t in li.hidden)
        kept = _storage_bytes(t for li in inputs for t in _tensors([li.hidden, li.kwargs]))
        peak_hidden, peak_kept = max(peak_hidden, hidden), max(peak_kept, kept)
        if k == 0:
            _check_restart(lx, inputs[0], chunk[0], first_all)
        for layer in todo:
            with swapped_layer(lx.layers[layer], ly.layers[layer]):
                _restart_nll(lx, inputs, chunk, layer, swapped[layer], loss_tokens)
            for part in parts:
                if (part, layer) in by_part:
                    with swapped_layer(lx.layers[layer], ly.layers[layer], keys[(part, layer)]):
                        _restart_nll(lx, inputs, chunk, layer, by_part[(part, layer)],
                                     loss_tokens)  # fmt: skip
            if progress is not None:
                progress(1)
        del inputs, cap
    seq_cat = batches.seq_category.numpy()
    C = len(batches.categories)
    out = np.full((C, lx.num_layers), np.nan)
    for layer in todo:
        out[:, layer] = loss_per_category(swapped[layer], cnt, seq_cat, C)
    part_out = {p: np.full((C, lx.num_layers), np.nan) for p in parts}
    for (part, layer), values in by_part.items():
        part_out[part][:, layer] = loss_per_category(values, cnt, seq_cat, C)
    return SwapResult(
        loss=loss_per_category(nll0, cnt, seq_cat, C),
        loss_swapped=out,
        part_swapped=part_out,
        loss_tokens=loss_tokens,
        chunks=len(chunks),
        peak_hidden_bytes=peak_hidden,
        peak_kept_bytes=peak_kept,
    )


def _check_restart(
    layout: ResolvedLayout, inputs: LayerInputs, batch: ProbeBatch, expect: np.ndarray
) -> None:
    """Restarting at layer 0 must reproduce the model's own all-token loss."""
    got = np.zeros(int(batch.seq_index.max()) + 1)
    _restart_nll(layout, [inputs], [batch], 0, got, "all")
    got = got[batch.seq_index.numpy()]
    tokens = float(batch.mask.sum())
    if not np.allclose(got, expect, rtol=RESTART_RTOL, atol=1e-6 * max(1.0, tokens)):
        raise EvaluationError(
            f"{layout.family}: restarting the forward pass at layer 0 does not reproduce the "
            f"model's loss (max diff {np.abs(got - expect).max():.3g}); the swap scan "
            "cannot be trusted for this model"
        )


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when one side is constant."""

    def rank(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for val in np.unique(v):
            sel = v == val
            r[sel] = r[sel].mean()
        return r

    ra, rb = rank(np.asarray(a, float)), rank(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass(eq=False)
class ComparisonScan(ArrayRecord):
    """Parents A and B side by side. ``advantage`` = BI_A - BI_B [C, L]. ``swap_ab`` [C, L]:
    loss change of A when its layer l comes from B; ``swap_ba`` the reverse.
    ``swap_advantage`` = (swap_ab - swap_ba) / 2: positive where A's layer l is the better
    one (taking B's hurts A, giving A's helps B). ``swap_ab_attention`` ... ``swap_ba_ffn``:
    the same two directions with only that component of layer l swapped (None when the
    scan did not swap components; comparisons saved before them load with None)."""

    KIND = "comparison"
    FORMAT = 2

    model_a: str
    model_b: str
    loss_tokens: str  # the targets every loss here counts (both scans and both swaps)
    categories: list[str]
    num_layers: int
    agreement_spearman: list[float]  # per category, advantage vs swap_advantage
    agreement_sign: float  # share of cells where both maps have the same sign
    bi_a: np.ndarray
    bi_b: np.ndarray
    advantage: np.ndarray
    loss_a: np.ndarray
    loss_b: np.ndarray
    swap_ab: np.ndarray
    swap_ba: np.ndarray
    swap_advantage: np.ndarray
    swap_ab_attention: np.ndarray | None = None
    swap_ba_attention: np.ndarray | None = None
    swap_ab_ffn: np.ndarray | None = None
    swap_ba_ffn: np.ndarray | None = None

    def part_swaps(self, part: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(A <- B, B <- A) loss changes [C, L] of swapping only ``part``; None when absent."""
        ab = getattr(self, f"swap_ab_{part}", None)
        ba = getattr(self, f"swap_ba_{part}", None)
        if ab is None or ba is None:
            return None
        return np.asarray(ab, dtype=float), np.asarray(ba, dtype=float)


def compare_scans(
    scan_a: Scan,
    scan_b: Scan,
    swap_ab: SwapResult | None = None,
    swap_ba: SwapResult | None = None,
) -> ComparisonScan:
    """Combine two scans (same probes, same loss) and, optionally, both swap directions.
    Scans or swap results that count different loss targets are refused."""
    if scan_a.categories != scan_b.categories or scan_a.num_layers != scan_b.num_layers:
        raise ArchitectureMismatchError(
            "the two scans differ in probe categories or layer count; scan both parents "
            "with the same probes"
        )
    kinds = {"scan A": scan_a.loss_tokens, "scan B": scan_b.loss_tokens}
    for name, swap in (("swap A<-B", swap_ab), ("swap B<-A", swap_ba)):
        if swap is not None:
            kinds[name] = swap.loss_tokens
    if len(set(kinds.values())) > 1:
        raise ConfigError(
            "cannot compare losses over different tokens ("
            + ", ".join(f"{k}: {v}" for k, v in kinds.items())
            + "); redo them with the same loss (--loss)"
        )
    C, L = scan_a.bi.shape
    nan = np.full((C, L), np.nan)
    ab = swap_ab.delta if swap_ab is not None else nan
    ba = swap_ba.delta if swap_ba is not None else nan
    adv = scan_a.bi - scan_b.bi
    sadv = (ab - ba) / 2
    rho = [
        spearman(adv[c], sadv[c]) if np.isfinite(sadv[c]).all() else float("nan") for c in range(C)
    ]
    ok = np.isfinite(sadv)
    sign = float((np.sign(adv[ok]) == np.sign(sadv[ok])).mean()) if ok.any() else float("nan")
    parts: dict[str, np.ndarray] = {}
    for part in SWAP_PARTS:
        pab = swap_ab.part_delta(part) if swap_ab is not None else None
        pba = swap_ba.part_delta(part) if swap_ba is not None else None
        if pab is not None and pba is not None:
            parts[f"swap_ab_{part}"], parts[f"swap_ba_{part}"] = pab, pba
    return ComparisonScan(
        model_a=scan_a.model,
        model_b=scan_b.model,
        loss_tokens=scan_a.loss_tokens,
        categories=list(scan_a.categories),
        num_layers=L,
        agreement_spearman=rho,
        agreement_sign=sign,
        bi_a=scan_a.bi,
        bi_b=scan_b.bi,
        advantage=adv,
        loss_a=scan_a.loss,
        loss_b=scan_b.loss,
        swap_ab=ab,
        swap_ba=ba,
        swap_advantage=sadv,
        **parts,
    )

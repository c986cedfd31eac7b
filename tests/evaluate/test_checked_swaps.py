"""The checked-swap protocol of the serving-engine backends, without an engine installed:
a scripted engine stands for vLLM / SGLang (its push may be right, half-done, or raise);
the tensors the search pushes (whole blocks, checkpoint names) from a real tiny
qwen3_moe; the per-family engine choice and the fallback to transformers.

The same protocol on vLLM's real CPU build: tests/evaluate/test_vllm_cpu.py.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
import torch

from darwinmerge.errors import EvaluationError
from darwinmerge.evaluate.backends.checked import CheckedEngine, SwapCheck, default_tolerance

IDS = ((3, 5, 7, 9), (2, 4))


def _logprobs(weights: float) -> tuple[tuple[float, ...], ...]:
    """What a model with one scalar 'weight' scores on IDS (a stand-in for a forward)."""
    return tuple(tuple(-0.5 * weights * t for t in row[1:]) for row in IDS)


class ScriptedEngine(CheckedEngine):
    """An engine holding one scalar weight; ``push_effect`` says what a push does."""

    engine_name = "Scripted"

    def __init__(self, push_effect: Callable[[float], float] | None = None) -> None:
        super().__init__()
        self.weight = 1.0
        self.push_effect = push_effect or (lambda w: w)
        self.restarts = 0

    def push(
        self, tensors: Mapping[str, torch.Tensor], folder: Callable[[], str | Path] | None = None
    ) -> float:
        self.usable = False
        self.weight = self.push_effect(float(tensors["w"]))
        return 0.0

    def restart(self, folder: str | Path) -> float:
        self.restarts += 1
        self.weight = float(Path(folder).name)
        self.usable = True
        return 0.0

    def prompt_logprobs(self, token_ids: Sequence[Sequence[int]]) -> list[list[float]]:
        return [list(row) for row in _logprobs(self.weight)]

    def score(self) -> float:
        self._usable("loglikelihood")
        return self.weight


def _swap(engine: ScriptedEngine, w: float, check_w: float | None = None) -> str:
    check = SwapCheck(IDS, _logprobs(w if check_w is None else check_w))
    return engine.swap({"w": torch.tensor(w)}, check, lambda: Path(f"/nowhere/{w}"))


def test_a_right_push_is_used_and_scored() -> None:
    engine = ScriptedEngine()
    assert _swap(engine, 2.0) == "push" and engine.score() == 2.0
    assert _swap(engine, 3.0) == "push" and engine.restarts == 0
    assert [p for p, _ in engine.history] == ["push", "push"]


def test_a_wrong_push_restarts_on_the_folder_and_later_swaps_skip_the_push() -> None:
    engine = ScriptedEngine(push_effect=lambda w: 0.5 * (w + 1.0))  # half-swapped
    with pytest.warns(RuntimeWarning, match="in-place weight update failed its check"):
        assert _swap(engine, 3.0) == "restart"
    assert engine.score() == 3.0 and not engine.push_trusted
    assert _swap(engine, 4.0) == "restart" and engine.restarts == 2


def test_an_engine_error_in_the_push_restarts() -> None:
    def broken(w: float) -> float:
        raise RuntimeError("Attempted to load weight into parameter (torch.Size([0]))")

    engine = ScriptedEngine(push_effect=broken)
    with pytest.warns(RuntimeWarning, match=r"RuntimeError: Attempted to load weight"):
        assert _swap(engine, 2.0) == "restart"
    assert engine.score() == 2.0


def test_a_model_no_engine_scores_right_is_refused_and_never_scored() -> None:
    engine = ScriptedEngine()
    with pytest.warns(RuntimeWarning), pytest.raises(EvaluationError) as info:
        _swap(engine, 2.0, check_w=2.5)
    assert "refusing to score it" in str(info.value) and "\n" not in str(info.value)
    assert not engine.usable
    with pytest.raises(EvaluationError, match="holds no checked model"):
        engine.score()
    assert _swap(engine, 5.0) == "restart" and engine.score() == 5.0  # a later one is fine


def test_tolerance_is_per_token_and_relative() -> None:
    atol, rtol, quantile = default_tolerance("float32")
    assert quantile == 1.0
    check = SwapCheck(((1, 2, 3),), ((-10.0, -0.1),), atol=atol, rtol=rtol)
    assert check.excess([[-10.0 - 0.9 * (atol + 10 * rtol), -0.1]]) < 0
    assert check.excess([[-10.0 - 1.1 * (atol + 10 * rtol), -0.1]]) > 0
    assert check.excess([[-10.0, -0.1 + 1.1 * (atol + 0.1 * rtol)]]) > 0
    assert check.excess([[-10.0, math.nan]]) == math.inf
    assert check.excess([[-10.0]]) == math.inf  # a row of another length
    assert default_tolerance("bfloat16")[0] > atol


def test_half_precision_allows_a_few_rerouted_tokens_not_a_wrong_model() -> None:
    """bf16: one token in twenty moved by 0.4 (an expert chosen otherwise) passes; the
    same move on a quarter of the tokens, or a NaN, fails."""
    atol, rtol, quantile = default_tolerance("bfloat16")
    want = tuple(-5.0 - 0.01 * i for i in range(20))
    check = SwapCheck((tuple(range(21)),), (want,), atol, rtol, quantile)
    noise = [w + 0.03 * (-1) ** i for i, w in enumerate(want)]
    assert check.excess([noise]) < 0
    assert check.excess([[w - 0.4 if i == 7 else w for i, w in enumerate(noise)]]) < 0
    assert check.excess([[w - 0.4 if i % 4 == 0 else w for i, w in enumerate(noise)]]) > 0
    assert check.excess([[math.nan if i == 7 else w for i, w in enumerate(noise)]]) == math.inf


def test_pushed_tensors_are_whole_blocks_in_checkpoint_names(tmp_path: Path) -> None:
    """A changed expert tensor brings its whole ``layers.N.mlp`` block, written back in
    the checkpoint's per-expert names; the pushed values equal the checkpoint's."""
    from safetensors.torch import load_file

    from darwinmerge.evolve.workers import _checkpoint_tensors, _layer_groups
    from darwinmerge.zoo.tiny import build_tiny_model, save_tiny

    model = build_tiny_model("qwen3_moe", seed=3, num_layers=2, num_experts=4)
    saved = load_file(save_tiny(model, tmp_path / "m") / "model.safetensors")
    state = model.state_dict()
    changed = {"model.layers.1.mlp.experts.down_proj", "model.norm.weight"}
    names = _layer_groups(changed, state)
    assert names == {n for n in state if n.startswith("model.layers.1.mlp.")} | {
        "model.norm.weight"
    }
    pushed = _checkpoint_tensors(model, state, names)
    want = {n for n in saved if n.startswith("model.layers.1.mlp.")} | {"model.norm.weight"}
    assert set(pushed) == want and len(want) == 2 + 3 * 4  # router, norm, 4 experts x 3
    assert all(torch.equal(pushed[n], saved[n]) for n in want)
    whole = _checkpoint_tensors(model, state, set(state))
    assert set(whole) == set(saved)


def test_backend_picks_the_engine_per_family(tmp_path: Path) -> None:
    from darwinmerge.evolve.config import BackendConfig

    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "qwen3_5_moe_text"}')
    cfg = BackendConfig(name="vllm", families={"qwen3_5_moe": "transformers"})
    assert cfg.engine_for(folder) == "transformers"
    assert BackendConfig(name="vllm", families={"llama": "transformers"}).engine_for(folder) == (
        "vllm"
    )
    assert BackendConfig(name="sglang").engine_for(folder) == "sglang"


def test_vllm_that_cannot_run_falls_back_to_transformers_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without vLLM (or with a head size its CPU attention does not take) the worker says
    why in one line and scores exactly as the transformers worker does."""
    from darwinmerge.evaluate.backends.vllm_backend import vllm_unsupported
    from darwinmerge.evaluate.tasks import TaskItem
    from darwinmerge.evolve.workers import CandidateWorker, WorkerSpec
    from darwinmerge.zoo.tiny import build_tiny_model, save_tiny, tiny_tokenizer

    tok = tiny_tokenizer()
    paths = []
    for seed in (0, 1):
        model = build_tiny_model("llama", seed=seed, num_layers=2, vocab_size=320)
        paths.append(save_tiny(model, tmp_path / f"p{seed}"))
        tok.save_pretrained(paths[-1])
    capsys.readouterr()  # the save progress bars
    monkeypatch.setitem(sys.modules, "vllm", None)
    assert "pip install 'darwinmerge[vllm]'" in str(vllm_unsupported(paths[0]))
    items = tuple(
        TaskItem(id=f"i{k}", category="c", prompt=f"{k} + 1 =", answer=" 1", choices=(" 1", " 2"))
        for k in range(4)
    )

    def spec(backend: str) -> WorkerSpec:
        return WorkerSpec(
            parents=(("a", str(paths[0])), ("b", str(paths[1]))),
            base=None,
            items=items,
            categories=("c",),
            backend=backend,
        )

    worker = CandidateWorker(spec("vllm"))
    line = capsys.readouterr().err.strip()
    assert line.startswith("backend vllm -> transformers: the vllm backend needs") and (
        "\n" not in line
    )
    assert worker.spec.backend == "transformers"
    got = worker.evaluate_model("parent:b", items)
    want = CandidateWorker(spec("transformers")).evaluate_model("parent:b", items)
    assert [it.loglikelihoods for it in got.items] == [it.loglikelihoods for it in want.items]


def test_cpu_head_sizes_vllm_does_not_take_are_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import types

    from darwinmerge.evaluate.backends import vllm_backend

    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for head, ok in ((16, False), (32, True), (48, False), (64, True), (128, True)):
        (tmp_path / "config.json").write_text(
            f'{{"model_type": "qwen3", "num_attention_heads": 4, "head_dim": {head}}}'
        )
        reason = vllm_backend.vllm_unsupported(tmp_path)
        assert (reason is None) == ok, (head, reason)
        if not ok:
            assert f"has {head}" in str(reason)

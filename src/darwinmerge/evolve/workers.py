"""Candidate evaluation workers: in-process, or as Ray actors.

A :class:`CandidateWorker` loads the parents once (resident state dicts) and one child
model with its evaluation backend, then for every candidate recipe merges in memory
into that child (only the tensors whose merge job changed are re-merged) and scores it
on the fitness items, chunk by chunk, with the early-stop rule after each chunk. It never
writes a checkpoint. A failure (merge error, NaN/Inf logits, a crash in the backend) is
returned as a failed result, never raised.

:class:`RayPool` runs N workers as Ray actors (local Ray by default, or a cluster at
``address``); each actor holds its own resident parents and child. Without Ray
installed, :func:`import_ray` raises with the install hint.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from darwinmerge.dtypes import torch_dtype
from darwinmerge.errors import EvaluationError, MissingDependencyError
from darwinmerge.evaluate.tasks import TaskItem
from darwinmerge.evolve.early_stop import EarlyStopRule, category_counts, fitness_of
from darwinmerge.merge.options import DEFAULT_OPTIONS, MergeOptions

__all__ = [
    "WorkerSpec",
    "CandidateRequest",
    "CandidateResult",
    "CandidateWorker",
    "InProcessPool",
    "RayPool",
    "import_ray",
    "RAY_HINT",
]

RAY_HINT = "pip install 'darwinmerge[ray]'"


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs; picklable (sent to Ray actors)."""

    parents: tuple[tuple[str, str], ...]
    """(name, path) of every parent, in the recipes' parent order."""
    base: str | None
    items: tuple[TaskItem, ...]
    categories: tuple[str, ...]
    scorer: str = "auto"
    score: str = "accuracy"
    """``accuracy`` (``scorer``'s right / wrong per item) or a continuous scorer
    (``gold_margin``, ``gold_prob``, ``gold_logprob``: the fitness averages its per-item value; the
    early-stop rule then races the candidate against the incumbent's per-item values,
    paired: :meth:`EarlyStopRule.should_stop_paired`)."""
    chunk_size: int = 16
    backend: str = "transformers"
    batch_size: int = 16
    max_new_tokens: int = 32
    device: str = "cpu"
    dtype: str = "float32"
    rule: EarlyStopRule | None = None
    audit: bool = False
    """Audit the stop rule: record where it would stop but score every item."""
    threads: int = 1
    engine_options: tuple[tuple[str, Any], ...] = ()
    """Keyword arguments for the vLLM / SGLang engine (``backend.engine_options``)."""
    options: MergeOptions = DEFAULT_OPTIONS
    """How candidates are merged (kernels) and whether a failure's traceback is printed."""


@dataclass(frozen=True)
class CandidateRequest:
    trial: int
    recipe_yaml: str
    best: float | None = None
    incumbent: tuple[float, ...] | None = None
    """The best finished candidate's value on every item, in the spec's item order (a
    continuous score only): what the paired stop rule races against."""


@dataclass
class CandidateResult:
    trial: int
    state: str  # "complete" | "pruned" | "failed"
    fitness: float = float("nan")
    categories: dict[str, list[int]] = field(default_factory=dict)
    """category -> [correct, scored]"""
    values: dict[str, float] = field(default_factory=dict)
    """category -> mean continuous value (only with a continuous ``score``)"""
    item_values: tuple[float, ...] = ()
    """Every scored item's continuous value, in scoring order (the spec's item order)."""
    items_used: int = 0
    items_planned: int = 0
    merge_seconds: float = 0.0
    eval_seconds: float = 0.0
    stop_at: int | None = None
    """Items scored when the rule stopped (or, in audit mode, would have stopped)."""
    full_fitness: float | None = None
    correct: dict[str, bool] = field(default_factory=dict)
    error: str | None = None
    worker: str = ""
    digest: str = ""
    """SHA-256 over every scored item's id, prediction and log-likelihoods (bit-exact
    reproducibility checks across workers)."""

    def scores(self) -> dict[str, float]:
        return {c: (k / n if n else float("nan")) for c, (k, n) in self.categories.items()}


def _load_model(path: str, dtype: str) -> Any:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
    finally:
        if shown:  # leave the bars as the caller had them
            hf_logging.enable_progress_bar()
    return model.eval()


class CandidateWorker:
    """Resident parents + one resident child + a backend; scores candidate recipes."""

    def __init__(self, spec: WorkerSpec, name: str = "local") -> None:
        import torch

        from darwinmerge.checkpoint.tokenizer import load_tokenizer
        from darwinmerge.evaluate.backends import make_backend
        from darwinmerge.merge.executor import StateDictSource

        torch.set_num_threads(spec.threads)
        self.spec = spec
        self.name = name
        self._merger: Any = None
        self._planned: dict[str, int] = {}
        for it in spec.items:
            self._planned[it.category] = self._planned.get(it.category, 0) + 1
        self._index = {it.id: i for i, it in enumerate(spec.items)}
        paths = [p for _, p in spec.parents] + ([spec.base] if spec.base else [])
        tokenizer = load_tokenizer(spec.parents[0][1])
        self.tokenizer = tokenizer
        if spec.backend in ENGINES:
            reason = engine_unsupported(spec.backend, spec.parents[0][1], spec.dtype)
            if reason is None:
                self._init_vllm(paths)
                return
            print(f"backend {spec.backend} -> transformers: {reason}", file=sys.stderr, flush=True)
            spec = dataclasses.replace(spec, backend="transformers")
            self.spec = spec
        #: the resident parents (and base): the sources share their storage
        self.models = [_load_model(p, spec.dtype) for p in paths]
        self.sources = [StateDictSource.from_model(m) for m in self.models]
        child = _load_model(spec.parents[0][1], spec.dtype)
        self.backend = make_backend(
            spec.backend,
            child,
            tokenizer,
            device=spec.device,
            batch_size=spec.batch_size,
            max_new_tokens=spec.max_new_tokens,
            dtype=torch_dtype(spec.dtype),
        )
        self.child: Any = getattr(self.backend, "model", child)

    def _init_vllm(self, paths: list[str]) -> None:
        """vLLM or SGLang: the merge runs into a resident transformers child, as on the transformers
        backend; that child is darwin's own copy of the candidate. Each candidate's changed
        tensors (whole vLLM layers, checkpoint names) go to the engine by
        :meth:`VLLMBackend.swap <darwinmerge.evaluate.backends.vllm_backend.VLLMBackend.swap>`,
        which checks the engine's log-probabilities on a few item prompts against the
        child's and restarts the engine on the child's folder, or refuses, when they
        differ (``evaluate/backends/vllm_backend.py``)."""
        from darwinmerge.evaluate.backends.sglang_backend import SGLangBackend
        from darwinmerge.evaluate.backends.vllm_backend import VLLMBackend, default_tolerance
        from darwinmerge.merge.executor import StateDictSource

        spec = self.spec
        self.models = [_load_model(p, spec.dtype) for p in paths]
        self.sources = [StateDictSource.from_model(m) for m in self.models]
        self.child = _load_model(spec.parents[0][1], spec.dtype)
        engine_cls: Any = SGLangBackend if spec.backend == "sglang" else VLLMBackend
        self.engine = engine_cls(
            spec.parents[0][1],
            batch_size=spec.batch_size,
            max_new_tokens=spec.max_new_tokens,
            dtype=spec.dtype,
            **dict(spec.engine_options),
        )
        self.backend = self.engine
        ids = []
        for it in spec.items[:3]:
            row = self.tokenizer(it.prompt)["input_ids"][-48:]
            if len(row) >= 2:
                ids.append(tuple(int(i) for i in row))
        if not ids:
            raise EvaluationError("vllm: no item prompt has two tokens to check swaps on")
        self._check_ids = tuple(ids)
        self._tolerance = default_tolerance(spec.dtype)
        self._restart_dir: Any = None

    def _swap_vllm(self, changed: set[str] | None) -> None:
        """Swap the resident child into the engine: the tensors named in ``changed``
        (model state-dict names; None: every tensor), checked (see :meth:`_init_vllm`)."""
        import tempfile

        import torch

        from darwinmerge.evaluate.backends.vllm_backend import SwapCheck

        state = self.child.state_dict()
        names = set(state) if changed is None else _layer_groups(changed, state)
        if not names:  # the engine already holds this candidate, checked
            return
        expected = []
        with torch.inference_mode():
            for row in self._check_ids:
                logits = self.child(input_ids=torch.tensor([row])).logits[0].float()
                lp = logits.log_softmax(-1)
                expected.append(tuple(float(lp[i, row[i + 1]]) for i in range(len(row) - 1)))
        atol, rtol, quantile = self._tolerance
        check = SwapCheck(self._check_ids, tuple(expected), atol, rtol, quantile)

        def folder() -> str:
            old, self._restart_dir = (
                self._restart_dir,
                tempfile.TemporaryDirectory(
                    prefix="darwin-candidate-", dir=str(self.engine.scratch)
                ),
            )
            self.child.save_pretrained(self._restart_dir.name)
            self.tokenizer.save_pretrained(self._restart_dir.name)
            if old is not None:
                old.cleanup()
            return str(self._restart_dir.name)

        self.engine.swap(_checkpoint_tensors(self.child, state, names), check, folder)

    # ------------------------------------------------------------------ merge
    def _apply(self, recipe: Any) -> None:
        if self._merger is None:
            from darwinmerge.merge.planner import match_parents
            from darwinmerge.merge.resident import ResidentMerge

            names = [n for n, _ in self.spec.parents]
            got = [p.name for p in recipe.parents]
            if got != names:
                raise EvaluationError(f"candidate parents {got} differ from the worker's {names}")
            # the base is a source only for spaces whose recipes use it
            sources = self.sources[: len(names) + (1 if recipe.base else 0)]
            self._merger = ResidentMerge(
                self.child, sources, match_parents(recipe, sources), options=self.spec.options
            )
        before = dict(self._merger._signatures) if self._vllm() else {}
        self._merger.apply(recipe)
        if self._vllm():  # the engine takes the tensors whose merge changed
            after = self._merger._signatures
            changed = {n for n, sig in after.items() if before.get(n) != sig}
            self._swap_vllm(changed if self.engine.usable else None)

    def close(self) -> None:
        """Shut a serving engine (and its processes and tmpfs folders) down; nothing to
        do for the transformers backend."""
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()

    def _vllm(self) -> bool:
        return self.spec.backend in ENGINES and hasattr(self, "_check_ids")

    def _check_logits(self) -> None:
        """One forward pass on a short prompt: NaN/Inf logits fail the candidate."""
        import torch

        ids = self.tokenizer(self.spec.items[0].prompt, return_tensors="pt")["input_ids"]
        device = next(self.child.parameters()).device
        with torch.inference_mode():
            logits = self.child(input_ids=ids[:, -64:].to(device)).logits
        lo, hi = torch.aminmax(logits.float())
        if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
            raise EvaluationError("the merged child gives NaN/Inf logits")

    def evaluate_model(self, which: str, items: Sequence[TaskItem]) -> Any:
        """Full evaluation (an ``EvalResult``, no early stop) of a recipe YAML, or of a
        parent when ``which`` is ``"parent:NAME"`` (its weights written into the child)."""
        from darwinmerge.checkpoint.model_writer import write_into_model
        from darwinmerge.evaluate.results import evaluate
        from darwinmerge.merge.recipe import Recipe

        if which.startswith("parent:"):
            names = [n for n, _ in self.spec.parents]
            name = which.removeprefix("parent:")
            source = self.sources[names.index(name)]
            weights = {k: source.get(k) for k in source.keys()}
            write_into_model(self.child, weights)
            if self._merger is not None:
                self._merger.forget()
            if self._vllm():  # the whole parent, checked
                self._swap_vllm(None)
        else:
            self._apply(Recipe.from_yaml(which, source="selected candidate"))
        return evaluate(
            self.backend, list(items), scorer=self.spec.scorer, chunk_size=self.spec.chunk_size
        )

    # ------------------------------------------------------------------ score
    @property
    def _scorer(self) -> str:
        return self.spec.scorer if self.spec.score == "accuracy" else self.spec.score

    def merged(self, recipe: Any) -> Any:
        """The resident child with ``recipe`` (a Recipe or its YAML) merged into it."""
        from darwinmerge.merge.recipe import Recipe

        if isinstance(recipe, str):
            recipe = Recipe.from_yaml(recipe, source="re-scored candidate")
        self._apply(recipe)
        return self.child

    def fitness(self, recipe: Any, items: Sequence[TaskItem]) -> tuple[float, int]:
        """(fitness, items) of a recipe (a Recipe or its YAML) on ``items`` with the
        search's own score (the macro mean over the spec's categories), all items, no
        early stop: the re-scoring of the best candidates on fresh fitness items, and the
        health check's repair (:class:`darwinmerge.health.fitness.ResidentFitness`)."""
        from darwinmerge.evaluate.results import category_values, evaluate

        self.merged(recipe)
        ev = evaluate(self.backend, list(items), scorer=self._scorer, chunk_size=256)
        if self.spec.score == "accuracy":
            return fitness_of(category_counts(ev.items), self.spec.categories), ev.n
        values = {c: v for c, (v, _) in category_values(ev.items).items()}
        return _macro(values, self.spec.categories), ev.n

    def score(self, request: CandidateRequest) -> CandidateResult:
        from darwinmerge.evaluate.results import ChunkReport, category_values, evaluate
        from darwinmerge.merge.recipe import Recipe

        spec = self.spec
        result = CandidateResult(request.trial, "failed", worker=self.name)
        result.items_planned = len(spec.items)
        t0 = time.perf_counter()
        try:
            recipe = Recipe.from_yaml(request.recipe_yaml, source=f"trial {request.trial}")
            self._apply(recipe)
            result.merge_seconds = time.perf_counter() - t0
            t1 = time.perf_counter()
            self._check_logits()
            rule = spec.rule
            incumbent = request.incumbent if spec.score != "accuracy" else None
            if incumbent is not None and len(incumbent) != len(spec.items):
                incumbent = None  # not scored on these items: nothing to pair with

            def stop(report: ChunkReport) -> bool:
                assert rule is not None
                if spec.score == "accuracy":
                    counts = category_counts(report.results)
                    return rule.should_stop(counts, report.planned, spec.categories, request.best)
                if incumbent is None:
                    return False
                diffs: dict[str, list[float]] = {}
                for r in report.results:
                    diffs.setdefault(r.category, []).append(
                        (math.nan if r.value is None else r.value) - incumbent[self._index[r.id]]
                    )
                return rule.should_stop_paired(diffs, report.planned, spec.categories)

            def on_chunk(report: ChunkReport) -> bool:
                if rule is None or result.stop_at is not None or report.done >= report.total:
                    return True  # nothing left to save after the last chunk
                if stop(report):
                    result.stop_at = report.done
                    return spec.audit  # keep going only when auditing
                return True

            ev = evaluate(
                self.backend,
                list(spec.items),
                scorer=self._scorer,
                chunk_size=spec.chunk_size,
                on_chunk=on_chunk,
            )
            result.eval_seconds = time.perf_counter() - t1
        except Exception as exc:  # a failed candidate, never the end of the search
            result.merge_seconds = result.merge_seconds or time.perf_counter() - t0
            result.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            if self.spec.options.debug:
                traceback.print_exc()
            if self._merger is not None:
                self._merger.forget()
            return result
        counts = category_counts(ev.items)
        result.categories = {c: [k, n] for c, (k, n) in sorted(counts.items())}
        result.items_used = ev.n
        result.correct = {it.id: bool(it.correct) for it in ev.items}
        result.digest = _digest(ev.items)
        partial = fitness_of(counts, spec.categories)
        if spec.score != "accuracy":
            result.values = {c: v for c, (v, _) in category_values(ev.items).items()}
            result.item_values = tuple(
                math.nan if it.value is None else it.value for it in ev.items
            )
            partial = _macro(result.values, spec.categories)
        if spec.audit and result.stop_at is not None:
            result.full_fitness = partial
        result.fitness = partial
        result.state = "pruned" if ev.stopped else "complete"
        if not math.isfinite(partial):
            result.state, result.error = "failed", "fitness is not finite"
        return result


#: serving engines scored through checked swaps
ENGINES = ("vllm", "sglang")


def engine_unsupported(engine: str, folder: str, dtype: str = "auto") -> str | None:
    """Why ``engine`` cannot score the parents in ``folder`` here (one line), or None."""
    from darwinmerge.errors import MissingDependencyError

    if engine == "vllm":
        from darwinmerge.evaluate.backends.vllm_backend import vllm_unsupported

        return vllm_unsupported(folder, dtype)
    from darwinmerge.evaluate.backends.sglang_backend import import_sglang

    try:
        import_sglang()
    except MissingDependencyError as exc:
        return str(exc)
    return None


def _layer_groups(changed: set[str], state: dict[str, Any]) -> set[str]:
    """``changed`` widened to whole sub-blocks (``...layers.N.self_attn``, ``...mlp``):
    vLLM fuses q/k/v, gate/up and every expert of a layer into one module, and its
    in-place reload processes a module given in part with the rest uninitialised."""
    import re

    block = re.compile(r"^(.*\.layers\.\d+\.[^.]+)\.")
    prefixes = set()
    for name in changed:
        match = block.match(name)
        prefixes.add(match.group(1) + "." if match else name)
    return {n for n in state if any(n == p or n.startswith(p) for p in prefixes)}


def _checkpoint_tensors(model: Any, state: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """The named model tensors in the checkpoint's names and layout (transformers'
    reverse weight conversion: fused experts back to per-expert tensors where the
    family's checkpoints have them); tied names that share one storage given once."""
    from transformers.core_model_loading import revert_weight_conversion

    seen: set[int] = set()
    subset = {}
    for name in state:  # state-dict order: the embedding before a tied lm_head
        if name not in names:
            continue
        t = state[name]
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        subset[name] = t
    out: dict[str, Any] = revert_weight_conversion(model, subset)
    return out


def _macro(values: dict[str, float], categories: Sequence[str]) -> float:
    """Mean over ``categories`` of their mean values (NaN when one has no items)."""
    if not categories:
        return float("nan")
    return sum(values.get(c, float("nan")) for c in categories) / len(categories)


def _digest(items: Sequence[Any]) -> str:
    import hashlib

    h = hashlib.sha256()
    for it in items:
        lls = ",".join(
            float(v).hex() for v in (it.loglikelihoods or (() if it.value is None else (it.value,)))
        )
        h.update(f"{it.id}\0{it.prediction}\0{lls}\n".encode())
    return h.hexdigest()


class InProcessPool:
    """One worker in this process (the reference runner)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.worker = CandidateWorker(spec, "local")
        self.size = 1

    def map(self, requests: Sequence[CandidateRequest]) -> list[CandidateResult]:
        return [self.worker.score(r) for r in requests]

    def close(self) -> None:
        pass  # the worker stays usable: the selection scores with it after the search


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError(
            f"--workers > 1 runs Ray actors; install Ray with: {RAY_HINT}"
        ) from exc
    return ray


class RayPool:
    """``n`` :class:`CandidateWorker` actors (one GPU each where the cluster has GPUs)."""

    def __init__(
        self,
        spec: WorkerSpec,
        n: int,
        *,
        address: str | None = None,
        init_options: dict[str, Any] | None = None,
    ) -> None:
        ray = import_ray()
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            options.update(init_options or {})
            if address:
                options["address"] = address
            ray.init(**options)
            self._started = True
        gpus = 1 if spec.device.startswith("cuda") else 0
        actor_cls = ray.remote(num_cpus=1, num_gpus=gpus)(CandidateWorker)
        self.actors = [actor_cls.remote(spec, f"ray-{i}") for i in range(n)]
        self.size = n

    def map(self, requests: Sequence[CandidateRequest]) -> list[CandidateResult]:
        """Score the requests, actor ``i % n`` taking request ``i``; results in order."""
        refs = [self.actors[i % self.size].score.remote(r) for i, r in enumerate(requests)]
        return list(self._ray.get(refs))

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []
        if self._started:
            self._ray.shutdown()

"""The merge-problem suite: parent pairs the project builds itself, each with a structure
we know, for judging a search by what it returns on held-out items.

Every problem is two parents (``a``, the father's side, and ``b``) and an optional base,
made from a built zoo (``darwin zoo build``) by declared fine-tunes: which data mix,
which parameters train, how many steps. The *intended* structure is written beside each
problem; its *measured* structure (the parents' scores, the 50/50 merge, the ceiling and
the headroom) is what :func:`measure_problem` reports, because fine-tunes that touch
disjoint layers do not compose naively (docs/zoo.md, "The merge-problem suite").

Layout of a built suite::

    SUITE/
      suite.json                 manifest: format, config (the cache key), zoo hashes,
                                 per problem: parents' paths, hashes, training stats
      tasks/                     the zoo's evaluation items (``zoo:SUITE``)
      <problem>/<parent>/        Hugging Face model folders (only the trained parents;
                                 the zoo's own parents are referenced, not copied)

Determinism: one torch thread, seeded data streams and init; the same zoo and config give
bit-identical parents on one machine (``weights_sha256`` per parent). The build writes to
a temporary sibling folder renamed at the end, and an up-to-date suite is reused.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from darwinmerge.errors import CheckpointError, ConfigError, OutputExistsError
from darwinmerge.registry import Registry
from darwinmerge.zoo.build import (
    MOTHER_COLLAPSED,
    ZooConfig,
    _held_out,
    _progress,
    _save_parent,
    read_manifest,
    state_dict_hash,
)
from darwinmerge.zoo.skills import training_docs
from darwinmerge.zoo.train import (
    TrainConfig,
    TrainStats,
    ZooModelConfig,
    build_model,
    packed_batches,
    train_steps,
)

__all__ = [
    "SUITE_FORMAT",
    "PROBLEMS",
    "FineTune",
    "Pretrain",
    "ParentSpec",
    "Problem",
    "SuiteConfig",
    "micro_suite_config",
    "build_suite",
    "build_cost",
    "problem_parents",
]

SUITE_FORMAT = "darwinmerge-suite/1"


class FineTune(BaseModel):
    """One phase: train the parameters whose names contain one of ``train_only`` on the
    category ``mix`` for ``train.steps`` steps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mix: dict[str, float]
    train: TrainConfig


class Pretrain(BaseModel):
    """A new model of shape ``model`` pre-trained on the zoo's broad mix with the zoo's
    tokenizer (the deeper problem); its weights after ``base_steps`` are its base."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ZooModelConfig
    train: TrainConfig
    base_steps: int = Field(ge=1)


class ParentSpec(BaseModel):
    """A parent: a zoo parent as it is (``zoo``), or ``start`` (a zoo parent, or
    ``pretrained`` / ``pretrained_base`` of the problem's own pre-training) fine-tuned by
    ``phases`` in order on one data stream (``stream_seed``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    zoo: str | None = None
    start: str = "father"
    phases: tuple[FineTune, ...] = ()
    stream_seed: int = 11


class Problem(BaseModel):
    """Two parents ``a`` and ``b`` (+ ``base``), the structure intended, and whether the
    problem is one of the honest hard cases (little or no headroom expected). The whole
    model dump is the problem's cache key in ``suite.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    intent: str
    a: ParentSpec
    b: ParentSpec
    base: str | None = "zoo:base"
    """``zoo:NAME`` (a zoo parent), ``pretrained_base`` or None."""
    pretrain: Pretrain | None = None
    hard: bool = False

    @model_validator(mode="after")
    def _pretrain_given(self) -> Problem:
        uses = [s.start for s in (self.a, self.b) if s.zoo is None] + [self.base or ""]
        if self.pretrain is None and any(u.startswith("pretrained") for u in uses):
            raise ValueError(f"problem {self.name!r}: 'pretrained' parents need `pretrain`")
        return self


def _ft(
    mix: dict[str, float],
    steps: int,
    lr: float,
    train_only: tuple[str, ...],
    *,
    batch_size: int = 16,
    warmup: int = 10,
) -> FineTune:
    return FineTune(
        mix=mix,
        train=TrainConfig(
            steps=steps, lr=lr, warmup=warmup, batch_size=batch_size, train_only=train_only
        ),
    )


REASONING = {"reasoning": 1.0}
CODE = {"code": 1.0}
LOGIC = {"logic": 1.0}
TWO_SKILLS = {"reasoning": 0.5, "logic": 0.5}
GOLDEN_MIX = {"reasoning": 0.4, "logic": 0.4, "code": 0.07, "multilingual": 0.07, "knowledge": 0.06}


def _layers(*idx: int, part: str = "") -> tuple[str, ...]:
    return tuple(f"model.layers.{i}.{part}" for i in idx)


def default_problems() -> tuple[Problem, ...]:
    """The suite's problems (``SuiteConfig.problems``)."""
    deep = ZooModelConfig(num_layers=8, num_experts=16, moe_intermediate_size=48)
    return (
        Problem(
            name="zoo_pair",
            intent="today's demo pair: a generalist father, a mother fine-tuned on REASONING "
            "(routed experts, then the output head); the per-category ceiling is close to "
            "what a plain merge reaches, so a search has little to find",
            a=ParentSpec(zoo="father"),
            b=ParentSpec(zoo="mother"),
            hard=True,
        ),
        Problem(
            name="zoo_collapsed",
            intent="the collapsed mother: her REASONING skill lives in a routing that ruins "
            "every other skill; no merge is expected to carry it over",
            a=ParentSpec(zoo="father"),
            b=ParentSpec(zoo=MOTHER_COLLAPSED),
            hard=True,
        ),
        Problem(
            name="golden_layer",
            intent="the mother's REASONING and LOGIC are trained into layer 3 alone (on a "
            "mix that keeps the other skills there), then her layers 0-2 are trained on "
            "REASONING and LOGIC only (her breadth lost there): only a per-layer recipe "
            "(father at 0-2, mother at 3) keeps both",
            a=ParentSpec(zoo="father"),
            b=ParentSpec(
                phases=(
                    _ft(GOLDEN_MIX, 300, 3e-3, _layers(3)),
                    _ft(TWO_SKILLS, 150, 3e-3, _layers(0, 1, 2)),
                ),
                stream_seed=21,
            ),
        ),
        Problem(
            name="attn_vs_experts",
            intent="a skill carried by attention against one carried by the experts: A is "
            "the father with LOGIC trained into the attention layers (linear and full) only, "
            "B the father with REASONING trained into the routed experts only: a "
            "per-component recipe (attention from A, experts from B) keeps both",
            a=ParentSpec(
                phases=(_ft(LOGIC, 250, 3e-3, ("linear_attn.", "self_attn.")),), stream_seed=31
            ),
            b=ParentSpec(phases=(_ft(REASONING, 250, 3e-3, ("mlp.experts",)),), stream_seed=32),
        ),
        Problem(
            name="opposite_layers",
            intent="two skills in opposite parents and in different layers: A is the father "
            "with CODE trained into layers 0-1, B the father with REASONING trained into "
            "layers 2-3 (blocks with opposite t); layer-disjoint fine-tunes do not compose "
            "naively (A's layers 0-1 with B's 2-3 lost both skills in one measurement)",
            a=ParentSpec(phases=(_ft(CODE, 200, 3e-3, _layers(0, 1)),), stream_seed=41),
            b=ParentSpec(phases=(_ft(REASONING, 200, 3e-3, _layers(2, 3)),), stream_seed=42),
        ),
        Problem(
            name="specialists",
            intent="two specialists fine-tuned from the common base, every parameter "
            "trained: A on REASONING + LOGIC, B on CODE + MULTILINGUAL (the classic case "
            "for task arithmetic / TIES against the base)",
            a=ParentSpec(
                start="base",
                phases=(_ft({"reasoning": 0.5, "logic": 0.5}, 250, 2e-3, ()),),
                stream_seed=51,
            ),
            b=ParentSpec(
                start="base",
                phases=(_ft({"code": 0.5, "multilingual": 0.5}, 250, 2e-3, ()),),
                stream_seed=52,
            ),
        ),
        Problem(
            name="deep",
            intent="a deeper model (8 layers, 16 experts, top-2) pre-trained on the broad "
            "mix; the mother is its REASONING + LOGIC fine-tune of the routed experts of "
            "layers 4-7 and then of the output head: per-layer structure has room",
            pretrain=Pretrain(
                model=deep,
                train=TrainConfig(steps=600, lr=3e-3, warmup=30),
                base_steps=300,
            ),
            a=ParentSpec(start="pretrained"),
            b=ParentSpec(
                start="pretrained",
                phases=(
                    _ft(TWO_SKILLS, 250, 2e-3, _layers(4, 5, 6, 7, part="mlp.experts")),
                    _ft(TWO_SKILLS, 60, 1e-2, ("lm_head", "model.norm.")),
                ),
                stream_seed=61,
            ),
            base="pretrained_base",
        ),
    )


PROBLEMS: Registry[Problem] = Registry("merge problem")
for _problem in default_problems():
    PROBLEMS.add(_problem.name, _problem)


class SuiteConfig(BaseModel):
    """What determines the suite's parents (the cache key, with the zoo's hashes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    problems: tuple[Problem, ...] = Field(default_factory=default_problems)


def _scaled(p: Problem, steps: int, batch: int) -> Problem:
    """``p`` with every phase cut to ``steps`` steps of ``batch`` rows (micro suites)."""

    def cut(tc: TrainConfig) -> TrainConfig:
        return tc.model_copy(
            update={"steps": steps, "warmup": 0, "batch_size": batch, "seq_len": 64}
        )

    def spec(s: ParentSpec) -> ParentSpec:
        phases = tuple(f.model_copy(update={"train": cut(f.train)}) for f in s.phases)
        return s.model_copy(update={"phases": phases})

    update: dict[str, Any] = {"a": spec(p.a), "b": spec(p.b)}
    if p.pretrain is not None:
        small = ZooModelConfig(
            hidden_size=32,
            head_dim=16,
            linear_head_dim=16,
            num_layers=8,
            num_experts=8,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=16,
        )
        update["pretrain"] = Pretrain(model=small, train=cut(p.pretrain.train), base_steps=1)
    return p.model_copy(update=update)


def micro_suite_config() -> SuiteConfig:
    """Every problem with 2-step phases (for tests on a micro zoo)."""
    return SuiteConfig(problems=tuple(_scaled(p, 2, 2) for p in default_problems()))


# --------------------------------------------------------------------------- build
def _load_state(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    if not (folder / "config.json").exists():
        raise CheckpointError(f"{folder} is not a model folder (no config.json)")
    return dict(AutoModelForCausalLM.from_pretrained(str(folder)).state_dict())


class _Builder:
    """Trains the problems of a suite from the zoo at ``zoo``, one folder each."""

    def __init__(self, zoo: Path, zoo_cfg: ZooConfig, say: Callable[[str], None]):
        from tokenizers import Tokenizer

        self.zoo, self.cfg, self.say = zoo, zoo_cfg, say
        self.tok = Tokenizer.from_file(str(zoo / "father" / "tokenizer.json"))
        eos = self.tok.token_to_id("<|endoftext|>")
        if eos is None:
            raise CheckpointError(f"{zoo}/father/tokenizer.json lacks <|endoftext|>")
        self.eos_id = int(eos)
        self.world, self.held = _held_out(zoo_cfg)
        self._zoo_states: dict[str, dict[str, torch.Tensor]] = {}

    def encode(self, s: str) -> list[int]:
        return list(self.tok.encode(s).ids)

    def zoo_state(self, name: str) -> dict[str, torch.Tensor]:
        if name not in self._zoo_states:
            self._zoo_states[name] = _load_state(self.zoo / name)
        return self._zoo_states[name]

    def _batches(self, mix: dict[str, float], stream_seed: int, tc: TrainConfig) -> Any:
        docs = training_docs(self.world, mix, stream_seed=stream_seed, held_out=self.held)
        return packed_batches(
            docs, self.encode, eos_id=self.eos_id, batch_size=tc.batch_size, seq_len=tc.seq_len
        )

    def pretrain(self, name: str, pre: Pretrain) -> dict[str, Any]:
        model = build_model(pre.model, self.tok.get_vocab_size(), self.cfg.seed, self.eos_id)
        snaps: dict[str, dict[str, torch.Tensor]] = {}

        def keep_base(_step: int) -> None:
            snaps["base"] = copy.deepcopy(model.state_dict())

        stats = train_steps(
            model,
            self._batches(self.cfg.mix, 1, pre.train),
            pre.train,
            on_step=_progress(self.say, f"{name}: pretrain", pre.train.steps),
            snapshot_at=[min(pre.base_steps, pre.train.steps)],
            on_snapshot=keep_base,
        )
        snaps.setdefault("base", copy.deepcopy(model.state_dict()))
        snaps["pretrained"] = copy.deepcopy(model.state_dict())
        self.pretrained = (model, snaps)
        return {"train": stats.to_dict()}

    def problem(self, problem: Problem, folder: Path) -> dict[str, Any]:
        """Train ``problem``'s parents into ``folder`` (later renamed to SUITE/<name>);
        its manifest entry."""
        entry: dict[str, Any] = {
            "config": problem.model_dump(mode="json"),
            "intent": problem.intent,
            "hard": problem.hard,
        }
        if problem.pretrain is not None:
            entry["pretrain"] = self.pretrain(problem.name, problem.pretrain)
        entry["a"] = self.parent(problem, "a", problem.a, folder)
        entry["b"] = self.parent(problem, "b", problem.b, folder)
        if problem.base == "pretrained_base":
            model, snaps = self.pretrained
            _save_parent(model, snaps["base"], self.tok, folder / "base")
            entry["base"] = {
                "path": f"{problem.name}/base",
                "weights_sha256": state_dict_hash(snaps["base"]),
            }
        elif problem.base is not None:
            entry["base"] = {"path": problem.base}
        return entry

    def parent(
        self, problem: Problem, which: str, spec: ParentSpec, folder: Path
    ) -> dict[str, Any]:
        """Train one parent into ``folder/<which>``; its manifest entry."""
        if spec.zoo is not None:
            given = self.zoo / spec.zoo
            if not (given / "config.json").exists():
                raise CheckpointError(f"{given}: the zoo lacks {spec.zoo}; run `darwin zoo build`")
            return {"path": f"zoo:{spec.zoo}"}
        if spec.start in ("pretrained", "pretrained_base"):
            model, snaps = self.pretrained
            state = snaps["pretrained" if spec.start == "pretrained" else "base"]
        else:
            state = self.zoo_state(spec.start)
            model = build_model(
                self.cfg.model, self.tok.get_vocab_size(), self.cfg.seed, self.eos_id
            )
        model.load_state_dict(state)
        stats: list[TrainStats] = []
        for i, phase in enumerate(spec.phases):
            tc = phase.train
            stats.append(
                train_steps(
                    model,
                    self._batches(phase.mix, spec.stream_seed + 100 * i, tc),
                    tc,
                    on_step=_progress(self.say, f"{problem.name}/{which} phase {i + 1}", tc.steps),
                )
            )
        out = copy.deepcopy(model.state_dict())
        _save_parent(model, out, self.tok, folder / which)
        return {
            "path": f"{problem.name}/{which}",
            "weights_sha256": state_dict_hash(out),
            "train": [s.to_dict() for s in stats],
        }


def _zoo_config(zoo: Path) -> tuple[ZooConfig, dict[str, Any]]:
    manifest = read_manifest(zoo)
    if manifest is None:
        raise ConfigError(f"{zoo}: not a built zoo (no zoo.json); run `darwin zoo build {zoo}`")
    core = dict(manifest["config"])
    collapsed = manifest.get(MOTHER_COLLAPSED, {}).get("config")
    cfg = ZooConfig.model_validate({**core, "collapsed": collapsed})
    return cfg, manifest


def _zoo_hashes(manifest: dict[str, Any]) -> dict[str, str]:
    hashes = dict(manifest["weights_sha256"])
    if MOTHER_COLLAPSED in manifest:
        hashes[MOTHER_COLLAPSED] = manifest[MOTHER_COLLAPSED]["weights_sha256"]
    return hashes


def build_suite(
    out: str | Path,
    zoo: str | Path,
    config: SuiteConfig | None = None,
    *,
    only: tuple[str, ...] | None = None,
    force: bool = False,
    jobs: int = 1,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build (or reuse, or complete) the suite at ``out`` from the zoo at ``zoo``; return
    its manifest.

    ``jobs`` > 1 builds that many problems at once, each in its own process with one torch
    thread (the same weights as one at a time: every problem trains from its own seeds).

    Problems are built one at a time, each into a temporary folder renamed into place,
    then recorded in ``suite.json`` (replaced atomically): a killed build keeps the
    problems it finished and the next call builds only the rest. A problem is reused
    when its recorded config is the wanted one; one whose config changed is rebuilt
    alone. ``only`` builds the named problems (unknown names get the list of known
    ones). A suite built from another zoo (other weight hashes) is refused unless
    ``force``, which starts it afresh."""
    from darwinmerge.atomic import atomic_folder, write_json_atomic

    cfg = config or SuiteConfig()
    out, zoo = Path(out), Path(zoo).resolve()
    say = log or (lambda _m: None)
    problems = list(cfg.problems)
    if only:
        known = {p.name: p for p in problems}
        for name in only:
            if name not in known:
                PROBLEMS.get(name)  # raises with the known names and a did-you-mean
        problems = [known[n] for n in only]
    zoo_cfg, zoo_manifest = _zoo_config(zoo)
    if (out / "zoo.json").exists() or out.resolve() in (zoo, *zoo.parents):
        raise ConfigError(
            f"{out} holds the zoo (or contains it); the suite needs a folder of its own, "
            f"e.g. {zoo.parent / 'suite'}"
        )
    key = {"format": SUITE_FORMAT, "zoo_sha256": _zoo_hashes(zoo_manifest)}
    manifest = read_suite(out) if out.exists() else None
    if out.exists() and (manifest is None or {k: manifest.get(k) for k in key} != key):
        if not force:
            raise OutputExistsError(
                f"{out} exists and is not a suite of this zoo ({zoo}); "
                f"pass --force to rebuild it or choose another folder"
            )
        manifest = None
    if manifest is None:
        with atomic_folder(out, force=True) as tmp:
            shutil.copytree(zoo / "tasks", tmp / "tasks")
            manifest = {**key, "zoo": str(zoo), "seed": zoo_cfg.seed, "problems": {}}
            write_json_atomic(tmp / "suite.json", manifest)
    todo = [
        p
        for p in problems
        if manifest["problems"].get(p.name, {}).get("config") != p.model_dump(mode="json")
    ]
    if not todo:
        say(f"suite at {out} is up to date; reusing it")
        return manifest

    def record(name: str, entry: dict[str, Any]) -> None:
        manifest["problems"][name] = entry
        write_json_atomic(out / "suite.json", manifest)
        say(f"{name}: built in {entry['seconds']} s")

    if jobs > 1 and len(todo) > 1:
        import multiprocessing

        # the longest first (the wall time is then about max(longest, total / jobs))
        todo.sort(key=lambda p: -build_cost(p, zoo_cfg.model))
        work = [(zoo, zoo_cfg, problem, out) for problem in todo]
        with multiprocessing.get_context("spawn").Pool(min(jobs, len(todo))) as pool:
            for name, entry in pool.imap_unordered(_build_one, work):
                record(name, entry)
        return manifest
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        builder = _Builder(zoo, zoo_cfg, say)
        for problem in todo:
            record(problem.name, _timed_build(builder, problem, out))
    finally:
        torch.set_num_threads(threads)
    return manifest


def build_cost(problem: Problem, zoo_model: ZooModelConfig) -> float:
    """A problem's training work in arbitrary units, to order a parallel build: the
    tokens trained (steps x batch size x sequence length, every phase of both parents
    and its own pre-training) times the layers x width of the model they train."""
    model = problem.pretrain.model if problem.pretrain is not None else zoo_model
    phases = [ph.train for spec in (problem.a, problem.b) for ph in spec.phases]
    if problem.pretrain is not None:
        phases.append(problem.pretrain.train)
    tokens = sum(t.steps * t.batch_size * t.seq_len for t in phases)
    return tokens * model.num_layers * model.hidden_size


def _timed_build(builder: _Builder, problem: Problem, out: Path) -> dict[str, Any]:
    from darwinmerge.atomic import atomic_folder

    t1 = time.perf_counter()
    with atomic_folder(out / problem.name, force=True) as folder:
        entry = builder.problem(problem, folder)
    entry["seconds"] = round(time.perf_counter() - t1, 1)
    return entry


def _build_one(job: tuple[Path, ZooConfig, Problem, Path]) -> tuple[str, dict[str, Any]]:
    """One problem in a worker process of ``build_suite(jobs=...)``."""
    zoo, zoo_cfg, problem, out = job
    torch.set_num_threads(1)
    return problem.name, _timed_build(_Builder(zoo, zoo_cfg, lambda _m: None), problem, out)


def read_suite(out: str | Path) -> dict[str, Any] | None:
    """The parsed ``suite.json`` of ``out``, or None when absent or unreadable."""
    try:
        data = json.loads((Path(out) / "suite.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def problem_parents(suite: str | Path, name: str) -> dict[str, Path | None]:
    """``{"a": path, "b": path, "base": path or None}`` of problem ``name`` of a built
    suite (zoo parents resolved into the zoo the suite was built from)."""
    suite = Path(suite)
    manifest = read_suite(suite)
    if manifest is None:
        raise ConfigError(f"{suite}: not a built suite (no suite.json); run `darwin zoo suite`")
    problems = manifest["problems"]
    if name not in problems:
        raise ConfigError(f"{suite}: no problem {name!r}; built: {', '.join(problems)}")

    def resolve(ref: str) -> Path:
        if ref.startswith("zoo:"):
            return Path(manifest["zoo"]) / ref.removeprefix("zoo:")
        return suite / ref

    entry = problems[name]
    base = entry.get("base")
    return {
        "a": resolve(entry["a"]["path"]),
        "b": resolve(entry["b"]["path"]),
        "base": resolve(base["path"]) if base else None,
    }

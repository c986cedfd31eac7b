"""``darwin zoo build``: train the tiny parents (base, father, mother, mother_collapsed).

Pipeline (all seeded, one torch thread):

1. draw the world (languages, fact table) and the evaluation items of every category;
2. train the byte-level BPE on a sample of the broad training stream;
3. pre-train on the broad mix for ``pretrain.steps``; the weights after ``base_steps``
   are kept as ``base`` and the weights at the end are the ``father`` (the generalist);
4. fine-tune the father on REASONING only, phase after phase (default: the routed
   experts only, then the output head only) -> ``mother`` (docs/zoo.md says why);
5. write ``OUT/{base,father,mother}`` (config, safetensors, tokenizer, generation
   config), ``OUT/tasks/<category>.jsonl`` and ``OUT/zoo.json``;
6. the second mother, ``mother_collapsed``: the *saved* father (read back from
   ``father/``) fine-tuned on REASONING with the router trainable and a
   concentration-rewarding routing term (``ZooConfig.collapsed``, docs/zoo.md says what
   and why), written to ``OUT/mother_collapsed`` and recorded in ``zoo.json`` under
   ``"mother_collapsed"``.

The build goes to a temporary sibling folder that is renamed to ``OUT`` at the end, so
``OUT`` is either complete or absent. An existing ``OUT`` whose manifest has the same
config is reused (cache); any other existing ``OUT`` is refused unless ``force``.
The cache key of base / father / mother is the config *without* ``collapsed``, so a zoo
built before the second mother existed is reused as it is and only she is trained
from its saved father (into a temporary folder inside ``OUT``, renamed, then the
manifest is replaced atomically); the other parents' files are not touched.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from darwinmerge.atomic import atomic_folder, write_text_atomic
from darwinmerge.errors import CheckpointError, OutputExistsError
from darwinmerge.zoo.skills import CATEGORIES, eval_items, make_world, training_docs
from darwinmerge.zoo.tokenizer import EOS_TOKEN, save_tokenizer, train_tokenizer
from darwinmerge.zoo.train import (
    TrainConfig,
    TrainStats,
    ZooModelConfig,
    build_model,
    packed_batches,
    train_steps,
)

__all__ = [
    "ZOO_FORMAT",
    "PARENTS",
    "MOTHER_COLLAPSED",
    "CollapsePhase",
    "CollapseConfig",
    "DeadCriterion",
    "ZooConfig",
    "micro_config",
    "build_zoo",
    "read_manifest",
    "state_dict_hash",
]

ZOO_FORMAT = "darwinmerge-zoo/1"
PARENTS: tuple[str, ...] = ("base", "father", "mother")
MOTHER_COLLAPSED = "mother_collapsed"

DEFAULT_MIX: dict[str, float] = {
    "reasoning": 0.15,
    "code": 0.2,
    "logic": 0.2,
    "multilingual": 0.2,
    "knowledge": 0.25,
}


class CollapsePhase(BaseModel):
    """One phase of the collapsed mother's fine-tune."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train: TrainConfig
    router_balance: float = Field(default=0.0, ge=-10.0, le=10.0)
    """Coefficient of :func:`darwinmerge.zoo.train.routing_balance` (the Switch
    load-balancing loss) added to the LM loss; negative rewards concentrated routing."""


class DeadCriterion(BaseModel):
    """When the collapsed mother's routing is collapsed enough: in at least
    ``layer_share`` of the MoE layers, at least ``min_dead`` of the experts have a
    utilisation below ``threshold`` of a fair share (the MRI's dead-expert rule), measured
    on ``docs`` REASONING documents of their own stream. Until it holds, the phase
    ``after_phase`` goes on for rounds of ``round_steps`` steps, at most ``max_rounds``.

    Why: how far the same training collapses her routing depends on the machine's
    floating point (one build had 40-60 % dead experts, another's least-used expert kept
    0.108 of a fair share after the same steps). Training to a measured criterion makes
    "many of her experts are dead" hold on any build; the rounds taken and the measured
    fractions are recorded in ``zoo.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(default=0.05, gt=0.0, lt=1.0)
    min_dead: float = Field(default=0.5, gt=0.0, le=1.0)
    layer_share: float = Field(default=0.5, gt=0.0, le=1.0)
    after_phase: int = Field(default=0, ge=0)
    round_steps: int = Field(default=100, ge=1)
    max_rounds: int = Field(default=10, ge=0)
    docs: int = Field(default=96, ge=1)
    stream_seed: int = 4

    def met(self, util: torch.Tensor) -> bool:
        dead = (util < self.threshold).to(torch.float64).mean(-1)
        return bool((dead >= self.min_dead).to(torch.float64).mean() >= self.layer_share)


class CollapseConfig(BaseModel):
    """The second mother, ``mother_collapsed``: the saved father fine-tuned on REASONING
    only, phase after phase on one data stream (``stream_seed``); the routing phase goes
    on until ``until`` holds (None: the phases' steps only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stream_seed: int = 3
    until: DeadCriterion | None = DeadCriterion()
    phases: tuple[CollapsePhase, ...] = (
        # the routers and their input norms on REASONING, rewarding concentrated routing;
        # AdamW's weight decay (1.0) shrinks the router rows that get no gradient
        CollapsePhase(
            train=TrainConfig(
                steps=300,
                lr=0.05,
                warmup=10,
                batch_size=8,
                weight_decay=1.0,
                train_only=("mlp.gate.", "post_attention_layernorm"),
            ),
            router_balance=-0.5,
        ),
        # then the routed experts on REASONING under the new routing (the skill gain)
        CollapsePhase(
            train=TrainConfig(steps=150, lr=2e-3, warmup=10, train_only=("mlp.experts",)),
        ),
    )


class ZooConfig(BaseModel):
    """Everything that determines the zoo's weights (the cache key).

    ``collapsed`` (None: no second mother) is kept apart from the key of base / father /
    mother (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    model: ZooModelConfig = ZooModelConfig()
    vocab_size: int = Field(default=512, ge=300, le=4096)
    tokenizer_docs: int = Field(default=4000, ge=100)
    eval_items: int = Field(default=300, ge=10)
    n_facts: int = Field(default=300, ge=10)
    mix: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_MIX))
    base_steps: int = Field(default=400, ge=1)
    pretrain: TrainConfig = TrainConfig(steps=800, lr=3e-3, warmup=30)
    finetune: tuple[TrainConfig, ...] = (
        TrainConfig(steps=200, lr=2e-3, warmup=10, train_only=("mlp.experts",)),
        TrainConfig(steps=80, lr=1e-2, warmup=5, train_only=("lm_head", "model.norm.")),
    )
    """The mother's fine-tune on REASONING only, phase after phase on one data stream."""
    collapsed: CollapseConfig | None = CollapseConfig()

    def core_dump(self) -> dict[str, Any]:
        """The cache key of base / father / mother (JSON form, without ``collapsed``)."""
        return self.model_dump(mode="json", exclude={"collapsed"})


def micro_config(seed: int = 0) -> ZooConfig:
    """A seconds-long zoo with the same structure (for tests)."""
    small = ZooModelConfig(
        hidden_size=32,
        head_dim=16,
        linear_head_dim=16,
        num_experts=4,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
    )
    return ZooConfig(
        seed=seed,
        model=small,
        vocab_size=320,
        tokenizer_docs=300,
        eval_items=20,
        n_facts=40,
        base_steps=2,
        pretrain=TrainConfig(steps=3, lr=3e-3, warmup=1, batch_size=2, seq_len=64),
        finetune=(
            TrainConfig(steps=2, lr=1e-3, warmup=0, batch_size=2, seq_len=64, train_only=("mlp.",)),
            TrainConfig(
                steps=1, lr=1e-2, warmup=0, batch_size=2, seq_len=64, train_only=("lm_head",)
            ),
        ),
        collapsed=CollapseConfig(
            until=DeadCriterion(round_steps=1, max_rounds=2, docs=4),
            phases=(
                CollapsePhase(
                    train=TrainConfig(
                        steps=2,
                        lr=0.05,
                        warmup=0,
                        batch_size=2,
                        seq_len=64,
                        weight_decay=1.0,
                        train_only=("mlp.gate.", "post_attention_layernorm"),
                    ),
                    router_balance=-0.5,
                ),
                CollapsePhase(
                    train=TrainConfig(
                        steps=1,
                        lr=2e-3,
                        warmup=0,
                        batch_size=2,
                        seq_len=64,
                        train_only=("mlp.experts",),
                    ),
                ),
            ),
        ),
    )


def state_dict_hash(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    """The parsed ``zoo.json`` of ``out``, or None when absent or unreadable."""
    path = Path(out) / "zoo.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _complete(out: Path) -> bool:
    need = [out / p / "config.json" for p in PARENTS]
    need += [out / "tasks" / f"{c}.jsonl" for c in CATEGORIES]
    return all(p.exists() for p in need)


def _save_parent(model: Any, state: dict[str, torch.Tensor], tok: Any, out: Path) -> None:
    from transformers import GenerationConfig
    from transformers.utils import logging as hf_logging

    model.load_state_dict(state)
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(out))
    finally:
        if shown:  # leave the bars as the caller had them
            hf_logging.enable_progress_bar()
    save_tokenizer(tok, out)
    eos = model.config.eos_token_id
    GenerationConfig(
        eos_token_id=eos, pad_token_id=eos, do_sample=False, max_new_tokens=32
    ).save_pretrained(str(out))


def _collapsed_current(out: Path, manifest: dict[str, Any], cfg: ZooConfig) -> bool:
    if cfg.collapsed is None:
        return True
    entry = manifest.get(MOTHER_COLLAPSED)
    return (
        isinstance(entry, dict)
        and entry.get("config") == cfg.collapsed.model_dump(mode="json")
        and (out / MOTHER_COLLAPSED / "config.json").exists()
    )


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``folder/zoo.json`` atomically (temporary file, then rename)."""
    write_text_atomic(folder / "zoo.json", json.dumps(manifest, indent=2) + "\n")


def build_zoo(
    out: str | Path,
    config: ZooConfig | None = None,
    *,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build (or reuse, or complete with ``mother_collapsed``) the zoo at ``out`` and
    return its manifest."""
    cfg = config or ZooConfig()
    out = Path(out)
    say = log or (lambda _msg: None)
    wanted = {"format": ZOO_FORMAT, "config": cfg.core_dump()}
    if out.exists():
        manifest = read_manifest(out)
        if (
            manifest is not None
            and {k: manifest.get(k) for k in wanted} == wanted
            and _complete(out)
        ):
            if _collapsed_current(out, manifest, cfg):
                say(f"zoo at {out} is up to date (seed {cfg.seed}); reusing it")
                return manifest
            if MOTHER_COLLAPSED in manifest and not force:
                raise OutputExistsError(
                    f"{out}/{MOTHER_COLLAPSED} was built with another config; "
                    f"pass --force to rebuild her or choose another folder"
                )
            return _add_collapsed(out, manifest, cfg, say)
        if not force:
            raise OutputExistsError(
                f"{out} exists and is not a zoo built with this config; "
                f"pass --force to rebuild it or choose another folder"
            )
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # determinism (and speed on a busy machine)
    try:
        with atomic_folder(out, force=True) as tmp:
            manifest = _build_into(tmp, cfg, say)
            if cfg.collapsed is not None:
                manifest[MOTHER_COLLAPSED] = _build_collapsed(
                    tmp, tmp / MOTHER_COLLAPSED, cfg, cfg.collapsed, say
                )
            manifest["seconds"] = round(time.perf_counter() - t_start, 1)
            _write_manifest(tmp, manifest)
    finally:
        torch.set_num_threads(threads)
    say(f"zoo written to {out} in {manifest['seconds']} s")
    return manifest


def _add_collapsed(
    out: Path, manifest: dict[str, Any], cfg: ZooConfig, say: Callable[[str], None]
) -> dict[str, Any]:
    """Train only ``mother_collapsed`` from the saved father of an up-to-date zoo."""
    assert cfg.collapsed is not None
    say(f"zoo at {out} is up to date except {MOTHER_COLLAPSED}; training only her")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with atomic_folder(out / MOTHER_COLLAPSED, force=True) as tmp:
            entry = _build_collapsed(out, tmp, cfg, cfg.collapsed, say)
    finally:
        torch.set_num_threads(threads)
    manifest = {**manifest, MOTHER_COLLAPSED: entry}
    _write_manifest(out, manifest)
    say(f"{MOTHER_COLLAPSED} written to {out / MOTHER_COLLAPSED} in {entry['seconds']} s")
    return manifest


def _held_out(cfg: ZooConfig) -> tuple[Any, set[str]]:
    """The world of ``cfg`` and the prompts of its evaluation items (never trained on)."""
    world = make_world(cfg.seed, n_facts=cfg.n_facts)
    n_know = min(cfg.eval_items, cfg.n_facts)
    held = {
        it["prompt"]
        for c in CATEGORIES
        for it in eval_items(world, c, n_know if c == "knowledge" else cfg.eval_items)
    }
    return world, held


def _build_collapsed(
    zoo: Path,
    dest: Path,
    cfg: ZooConfig,
    col: CollapseConfig,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Fine-tune the father saved in ``zoo/father`` into ``dest`` (the same code path for a
    cold build and for adding her to an existing zoo, so both give the same weights)."""
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    father_dir = zoo / "father"
    tok = Tokenizer.from_file(str(father_dir / "tokenizer.json"))
    eos_id = tok.token_to_id(EOS_TOKEN)
    if eos_id is None:
        raise CheckpointError(f"{father_dir}/tokenizer.json lacks {EOS_TOKEN!r}")
    model = build_model(cfg.model, tok.get_vocab_size(), cfg.seed, eos_id)
    saved = AutoModelForCausalLM.from_pretrained(str(father_dir)).state_dict()
    model.load_state_dict(saved)
    father_hash = state_dict_hash(model.state_dict())
    recorded = (read_manifest(zoo) or {}).get("weights_sha256", {}).get("father")
    if recorded is not None and recorded != father_hash:
        raise CheckpointError(
            f"{father_dir}: weights do not hash to zoo.json's father; rebuild with --force"
        )
    world, held = _held_out(cfg)
    narrow = training_docs(world, {"reasoning": 1.0}, stream_seed=col.stream_seed, held_out=held)

    def encode(s: str) -> list[int]:
        return list(tok.encode(s).ids)

    stats: list[TrainStats] = []
    collapse: dict[str, Any] | None = None
    for i, phase in enumerate(col.phases):
        tc = phase.train
        batches = packed_batches(
            narrow, encode, eos_id=eos_id, batch_size=tc.batch_size, seq_len=tc.seq_len
        )
        step_say = _progress(say, f"{MOTHER_COLLAPSED} phase {i + 1}", tc.steps)
        stats.append(
            train_steps(model, batches, tc, on_step=step_say, router_balance=phase.router_balance)
        )
        if col.until is not None and i == col.until.after_phase:
            collapse = _collapse_until(model, batches, phase, col.until, world, held, encode)
            say(collapse.pop("say"))
    state = copy.deepcopy(model.state_dict())
    _save_parent(model, state, tok, dest)
    entry: dict[str, Any] = {
        "config": col.model_dump(mode="json"),
        "from": "father",
        "father_sha256": father_hash,
        "weights_sha256": state_dict_hash(state),
        "train": [st.to_dict() for st in stats],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if collapse is not None:
        entry["collapse"] = collapse
    return entry


def _collapse_until(
    model: torch.nn.Module,
    batches: Any,
    phase: CollapsePhase,
    until: DeadCriterion,
    world: Any,
    held: set[str],
    encode: Callable[[str], list[int]],
) -> dict[str, Any]:
    """Go on with ``phase`` in rounds until ``until`` holds (or ``max_rounds``); return the
    rounds taken, the measured dead fraction per layer after each, and whether it held."""
    from darwinmerge.zoo.train import routed_utilisation

    eos_id = int(model.config.eos_token_id)  # type: ignore[union-attr, arg-type]
    docs = list(
        itertools.islice(
            training_docs(world, {"reasoning": 1.0}, stream_seed=until.stream_seed, held_out=held),
            until.docs,
        )
    )
    more = phase.train.model_copy(update={"steps": until.round_steps, "warmup": 0})
    history: list[list[float]] = []
    rounds = 0
    while True:
        util = routed_utilisation(model, docs, encode, eos_id)
        history.append([round(float(v), 4) for v in (util < until.threshold).double().mean(-1)])
        if until.met(util) or rounds >= until.max_rounds:
            break
        train_steps(model, batches, more, router_balance=phase.router_balance)
        rounds += 1
    met = until.met(util)
    return {
        "rounds": rounds,
        "extra_steps": rounds * until.round_steps,
        "dead_fraction": history,
        "min_utilisation": [round(float(v), 4) for v in util.min(-1).values],
        "met": met,
        "say": f"{MOTHER_COLLAPSED}: routing criterion {'met' if met else 'NOT met'} after "
        f"{rounds} extra round(s); dead fraction per layer {history[-1]}",
    }


def _progress(say: Callable[[str], None], name: str, total: int) -> Callable[[int, float], None]:
    def cb(step: int, loss: float) -> None:
        if (step + 1) % max(1, total // 8) == 0 or step + 1 == total:
            say(f"{name}: step {step + 1}/{total} loss {loss:.3f}")

    return cb


def _build_into(tmp: Path, cfg: ZooConfig, say: Callable[[str], None]) -> dict[str, Any]:
    import transformers

    world = make_world(cfg.seed, n_facts=cfg.n_facts)
    n_know = min(cfg.eval_items, cfg.n_facts)
    items = {
        c: eval_items(world, c, n_know if c == "knowledge" else cfg.eval_items) for c in CATEGORIES
    }
    held = {it["prompt"] for c in CATEGORIES for it in items[c]}
    (tmp / "tasks").mkdir()
    for c in CATEGORIES:
        lines = [json.dumps(it, sort_keys=True) for it in items[c]]
        (tmp / "tasks" / f"{c}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    uniform = dict.fromkeys(CATEGORIES, 1.0)
    tok_docs = training_docs(world, uniform, stream_seed=-1, held_out=held)
    tok = train_tokenizer(
        (d.text for d in itertools.islice(tok_docs, cfg.tokenizer_docs)), cfg.vocab_size
    )
    eos_id = tok.token_to_id(EOS_TOKEN)
    if eos_id is None:
        raise CheckpointError(f"trained tokenizer lacks {EOS_TOKEN!r}")
    say(f"tokenizer: {tok.get_vocab_size()} tokens")

    def encode(s: str) -> list[int]:
        return list(tok.encode(s).ids)

    model = build_model(cfg.model, tok.get_vocab_size(), cfg.seed, eos_id)
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model: qwen3_5_moe_text, {n_params / 1e6:.2f} M parameters")

    snapshots: dict[str, dict[str, torch.Tensor]] = {}

    def keep_base(step: int) -> None:
        snapshots["base"] = copy.deepcopy(model.state_dict())

    def progress(name: str, total: int) -> Callable[[int, float], None]:
        return _progress(say, name, total)

    pre = cfg.pretrain
    broad = training_docs(world, cfg.mix, stream_seed=1, held_out=held)
    batches = packed_batches(
        broad, encode, eos_id=eos_id, batch_size=pre.batch_size, seq_len=pre.seq_len
    )
    base_at = min(cfg.base_steps, pre.steps)
    stats: dict[str, TrainStats] = {}
    stats["father"] = train_steps(
        model,
        batches,
        pre,
        on_step=progress("pretrain", pre.steps),
        snapshot_at=[base_at],
        on_snapshot=keep_base,
    )
    if "base" not in snapshots:  # pre.steps == 0
        keep_base(0)
    snapshots["father"] = copy.deepcopy(model.state_dict())

    narrow = training_docs(world, {"reasoning": 1.0}, stream_seed=2, held_out=held)
    ft_stats: list[TrainStats] = []
    for i, ft in enumerate(cfg.finetune):
        batches = packed_batches(
            narrow, encode, eos_id=eos_id, batch_size=ft.batch_size, seq_len=ft.seq_len
        )
        ft_stats.append(
            train_steps(model, batches, ft, on_step=progress(f"mother phase {i + 1}", ft.steps))
        )
    snapshots["mother"] = copy.deepcopy(model.state_dict())

    hashes = {}
    for name in PARENTS:
        _save_parent(model, snapshots[name], tok, tmp / name)
        hashes[name] = state_dict_hash(snapshots[name])
    return {
        "format": ZOO_FORMAT,
        "config": cfg.core_dump(),
        "seed": cfg.seed,
        "architecture": "Qwen3_5MoeForCausalLM",
        "model_type": "qwen3_5_moe_text",
        "n_params": n_params,
        "vocab_size": tok.get_vocab_size(),
        "layer_types": cfg.model.layer_types(),
        "base_step": base_at,
        "train": {
            "pretrain": stats["father"].to_dict(),
            "finetune": [st.to_dict() for st in ft_stats],
        },
        "tasks": {c: len(items[c]) for c in CATEGORIES},
        "weights_sha256": hashes,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }

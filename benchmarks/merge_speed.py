"""Merge speed and memory: darwinmerge vs a raw copy of the same bytes (and mergekit).

Builds a random dense pair (~1 GB each in bf16, llama layout) and a random MoE pair
(qwen3_moe, per-expert keys), then times ``linear``, ``slerp``, ``ties`` and
``dare_ties`` merges, each in a fresh process so that its peak RSS is its own. The
reference row is a plain copy of parent A's bytes, measured in the same run. When
``.venv-mergekit`` exists (``make mergekit-venv``), the same configs run through
``mergekit-yaml`` too.

    .venv/bin/python benchmarks/merge_speed.py [--workdir /tmp/darwin-bench] [--size-gb 1]

Targets (issue 2): linear within 2x the raw copy; ties at least 5x faster than mergekit
on 2 cores; peak RSS under 1 GiB + 4x the largest tensor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
MERGEKIT = ROOT / ".venv-mergekit" / "bin" / "mergekit-yaml"
METHODS = ("linear", "slerp", "ties", "dare_ties")


def _dense_config(size_gb: float) -> dict:
    hidden, inter, vocab = 2048, 5632, 32000
    per_layer = 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden
    fixed = 2 * vocab * hidden + hidden
    layers = max(1, round((size_gb * 1e9 / 2 - fixed) / per_layer))
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": 16,
        "num_key_value_heads": 16, "vocab_size": vocab, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 4096, "tie_word_embeddings": False, "dtype": "bfloat16",
    }


def _moe_config(size_gb: float) -> dict:
    hidden, inter, experts, vocab = 1024, 512, 32, 32000
    per_layer = 4 * hidden * hidden + experts * 3 * hidden * inter + experts * hidden + 4 * hidden
    fixed = 2 * vocab * hidden + hidden
    layers = max(1, round((size_gb * 1e9 / 2 - fixed) / per_layer))
    return {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": hidden,
        "intermediate_size": 2 * hidden, "moe_intermediate_size": inter, "num_experts": experts,
        "num_experts_per_tok": 4, "num_hidden_layers": layers, "num_attention_heads": 8,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": vocab, "rms_norm_eps": 1e-6,
        "max_position_embeddings": 4096, "tie_word_embeddings": False, "decoder_sparse_step": 1,
        "mlp_only_layers": [], "norm_topk_prob": True, "dtype": "bfloat16",
    }


def _shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", h // heads)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = (h,)
        out[p + "post_attention_layernorm.weight"] = (h,)
        out[p + "self_attn.q_proj.weight"] = (heads * hd, h)
        out[p + "self_attn.k_proj.weight"] = (kv * hd, h)
        out[p + "self_attn.v_proj.weight"] = (kv * hd, h)
        out[p + "self_attn.o_proj.weight"] = (h, heads * hd)
        if cfg["model_type"] == "qwen3_moe":
            out[p + "self_attn.q_norm.weight"] = (hd,)
            out[p + "self_attn.k_norm.weight"] = (hd,)
            out[p + "mlp.gate.weight"] = (cfg["num_experts"], h)
            for e in range(cfg["num_experts"]):
                q = f"{p}mlp.experts.{e}."
                out[q + "gate_proj.weight"] = (cfg["moe_intermediate_size"], h)
                out[q + "up_proj.weight"] = (cfg["moe_intermediate_size"], h)
                out[q + "down_proj.weight"] = (h, cfg["moe_intermediate_size"])
        else:
            out[p + "mlp.gate_proj.weight"] = (cfg["intermediate_size"], h)
            out[p + "mlp.up_proj.weight"] = (cfg["intermediate_size"], h)
            out[p + "mlp.down_proj.weight"] = (h, cfg["intermediate_size"])
    out["model.norm.weight"] = (h,)
    out["lm_head.weight"] = (v, h)
    return out


def build_random(cfg: dict, out: Path, seed: int, shard_bytes: int = 2 * 10**9) -> int:
    """Write a random bf16 checkpoint; returns the largest tensor's size in bytes."""
    if (out / "config.json").exists():
        return max(2 * _numel(s) for s in _shapes(cfg).values())
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    shard: dict[str, torch.Tensor] = {}
    size, index, files = 0, {}, 0
    shapes = _shapes(cfg)

    def flush() -> None:
        nonlocal shard, size, files
        files += 1
        name = f"model-{files:05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        index.update({k: name for k in shard})
        shard, size = {}, 0

    for name, shape in shapes.items():
        t = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
        if size + t.numel() * 2 > shard_bytes and shard:
            flush()
        shard[name] = t
        size += t.numel() * 2
    flush()
    total = sum(2 * _numel(s) for s in shapes.values())
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": index}))
    (out / "config.json").write_text(json.dumps(cfg))
    return max(2 * _numel(s) for s in shapes.values())


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _measure(cmd: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) and exit code of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0 and proc.stderr is not None:
        sys.stderr.write(proc.stderr.read().decode()[-2000:])
    return wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def _config(method: str, a: Path, b: Path, base: Path) -> dict:
    if method in ("linear",):
        return {"merge_method": method, "dtype": "bfloat16",
                "models": [{"model": str(a), "parameters": {"weight": 0.5}},
                           {"model": str(b), "parameters": {"weight": 0.5}}]}
    if method == "slerp":
        return {"merge_method": method, "dtype": "bfloat16", "base_model": str(a),
                "models": [{"model": str(a)}, {"model": str(b)}], "parameters": {"t": 0.4}}
    return {"merge_method": method, "dtype": "bfloat16", "base_model": str(base),
            "models": [{"model": str(a), "parameters": {"weight": 0.5, "density": 0.5}},
                       {"model": str(b), "parameters": {"weight": 0.5, "density": 0.5}}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/darwin-bench"))
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--moe-size-gb", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--no-mergekit", action="store_true")
    args = ap.parse_args()
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    darwin = str(Path(sys.executable).with_name("darwin"))
    rows = []
    pairs = {"dense": _dense_config(args.size_gb), "moe": _moe_config(args.moe_size_gb)}
    for kind, cfg in pairs.items():
        largest = 0
        for tag, seed in (("a", 0), ("b", 1), ("base", 2)):
            largest = build_random(cfg, work / kind / tag, seed)
        a, b, base = (work / kind / t for t in ("a", "b", "base"))
        nbytes = sum(f.stat().st_size for f in a.glob("*.safetensors"))
        budget_mib = 1024 + 4 * largest / 2**20
        copy_dst = work / kind / "copy"
        shutil.rmtree(copy_dst, ignore_errors=True)
        wall, rss, _ = _measure(["cp", "-r", str(a), str(copy_dst)])
        rows.append((kind, "raw copy", nbytes, wall, rss, 1.0, budget_mib, "ok"))
        ref = wall
        for method in args.methods.split(","):
            cfg_path = work / kind / f"{method}.yaml"
            cfg_path.write_text(yaml.safe_dump(_config(method, a, b, base)))
            out = work / kind / f"out-{method}"
            cmd = [darwin, "merge", str(cfg_path), str(out), "--force", "--threads", str(args.threads)]
            wall, rss, code = _measure(cmd, {"OMP_NUM_THREADS": "1"})
            rows.append((kind, f"darwin {method}", nbytes, wall, rss, wall / ref, budget_mib,
                         "ok" if code == 0 else f"exit {code}"))
            shutil.rmtree(out, ignore_errors=True)
            if MERGEKIT.exists() and not args.no_mergekit:
                mk_out = work / kind / f"mk-{method}"
                shutil.rmtree(mk_out, ignore_errors=True)
                wall, rss, code = _measure([str(MERGEKIT), str(cfg_path), str(mk_out), "--lazy-unpickle"])
                rows.append((kind, f"mergekit {method}", nbytes, wall, rss, wall / ref, budget_mib,
                             "ok" if code == 0 else f"exit {code}"))
                shutil.rmtree(mk_out, ignore_errors=True)
    print(f"\nmerge speed ({os.cpu_count()} cores, darwin --threads {args.threads}); "
          "x copy = wall / raw copy wall of the same parent bytes")
    print(f"{'pair':6} {'what':22} {'MB':>7} {'wall s':>8} {'peak RSS MiB':>13} {'x copy':>7} "
          f"{'RSS budget':>11} status")
    for kind, what, nbytes, wall, rss, ratio, budget, status in rows:
        print(f"{kind:6} {what:22} {nbytes / 1e6:7.0f} {wall:8.2f} {rss:13.0f} {ratio:7.2f} "
              f"{budget:11.0f} {status}")


if __name__ == "__main__":
    main()

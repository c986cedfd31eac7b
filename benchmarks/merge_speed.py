"""Merge speed and memory: darwinmerge vs a raw copy of the same bytes (and mergekit).

Builds a random dense pair (~1 GB each in bf16, llama layout) and a random MoE pair
(qwen3_moe, per-expert keys), then times ``linear``, ``slerp``, ``ties`` and
``dare_ties`` merges, each in a fresh process. The reference row is a plain ``cp -r`` of
parent A's bytes, measured in the same run. When ``.venv-mergekit`` exists
(``make mergekit-venv``), the same configs run through ``mergekit-yaml`` too.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/merge_speed.py \
        [--workdir /tmp/darwin-bench] [--size-gb 1] [--moe-size-gb 0.5] [--repeat 1]

Peak RSS is honest: a forked child's ``ru_maxrss`` starts from the RSS of the process
it was forked from (Linux carries the pre-exec peak over), so this process never imports
torch (the parents are built by a child, ``--build``) and every command is measured
through a small launcher (GNU ``/usr/bin/time -f %M`` when present, else this script in
``--launch`` mode, whose own few MiB are the floor).

Targets (issue 2): linear within 2x the raw copy; ties at least 5x faster than mergekit
on 2 cores; peak RSS under 1 GiB + 4x the largest tensor. Each row shows its verdict.
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

ROOT = Path(__file__).resolve().parents[1]
MERGEKIT = ROOT / ".venv-mergekit" / "bin" / "mergekit-yaml"
METHODS = ("linear", "slerp", "ties", "dare_ties")


def _dense_config(size_gb: float) -> dict:
    hidden, inter, vocab = 2048, 5632, 32000
    per_layer = 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden
    fixed = 2 * vocab * hidden + hidden
    layers = max(1, round((size_gb * 1e9 / 2 - fixed) / per_layer))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "vocab_size": vocab,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
    }


def _moe_config(size_gb: float) -> dict:
    hidden, inter, experts, vocab = 1024, 512, 32, 32000
    per_layer = 4 * hidden * hidden + experts * 3 * hidden * inter + experts * hidden + 4 * hidden
    fixed = 2 * vocab * hidden + hidden
    layers = max(1, round((size_gb * 1e9 / 2 - fixed) / per_layer))
    return {
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "moe_intermediate_size": inter,
        "num_experts": experts,
        "num_experts_per_tok": 4,
        "num_hidden_layers": layers,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": vocab,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "norm_topk_prob": True,
        "dtype": "bfloat16",
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


def largest_tensor_bytes(cfg: dict) -> int:
    return max(2 * _numel(s) for s in _shapes(cfg).values())


def build_random(cfg: dict, out: Path, seed: int, shard_bytes: int = 2 * 10**9) -> None:
    """Write a random bf16 checkpoint (kept when it already exists)."""
    if (out / "config.json").exists():
        return
    import torch  # only the --build child imports torch
    from safetensors.torch import save_file

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
        json.dumps({"metadata": {"total_size": total}, "weight_map": index})
    )
    (out / "config.json").write_text(json.dumps(cfg))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


GNU_TIME = Path("/usr/bin/time")


def _launch(cmd: list[str]) -> None:
    """``--launch`` mode: run ``cmd``, print ``maxrss_kib exit_code`` as the last line."""
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    print(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}", file=sys.stderr)


def _measure(cmd: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) and exit code of ``cmd``, run through a small launcher."""
    env = {**os.environ, **(env or {})}
    if GNU_TIME.exists():
        wrapped = [str(GNU_TIME), "-f", "%M %x", "--", *cmd]
    else:
        wrapped = [sys.executable, "-S", str(Path(__file__).resolve()), "--launch", "--", *cmd]
    start = time.perf_counter()
    proc = subprocess.run(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wall = time.perf_counter() - start
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    try:
        kib, code = (int(v) for v in lines[-1].split()[-2:])
    except (IndexError, ValueError):
        kib, code = 0, proc.returncode or 1
    if code != 0:
        sys.stderr.write("\n".join(lines[-20:]) + "\n")
    return wall, kib / 1024, code


def _best(
    cmd: list[str], repeat: int, env: dict | None = None, before: list[Path] | None = None
) -> tuple[float, float, int]:
    """Best wall of ``repeat`` runs (removing ``before`` paths first); max peak RSS."""
    best, rss, code = float("inf"), 0.0, 0
    for _ in range(repeat):
        for p in before or []:
            shutil.rmtree(p, ignore_errors=True)
        wall, r, c = _measure(cmd, env)
        best, rss, code = min(best, wall), max(rss, r), code or c
    return best, rss, code


def _config(method: str, a: Path, b: Path, base: Path) -> dict:
    if method in ("linear",):
        return {
            "merge_method": method,
            "dtype": "bfloat16",
            "models": [
                {"model": str(a), "parameters": {"weight": 0.5}},
                {"model": str(b), "parameters": {"weight": 0.5}},
            ],
        }
    if method == "slerp":
        return {
            "merge_method": method,
            "dtype": "bfloat16",
            "base_model": str(a),
            "models": [{"model": str(a)}, {"model": str(b)}],
            "parameters": {"t": 0.4},
        }
    return {
        "merge_method": method,
        "dtype": "bfloat16",
        "base_model": str(base),
        "models": [
            {"model": str(a), "parameters": {"weight": 0.5, "density": 0.5}},
            {"model": str(b), "parameters": {"weight": 0.5, "density": 0.5}},
        ],
    }


def _env_line() -> str:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({cores} usable), load average {load}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--launch":
        _launch(sys.argv[3:] if sys.argv[2] == "--" else sys.argv[2:])
        return
    import yaml

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/darwin-bench"))
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--moe-size-gb", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeat", type=int, default=1, help="best-of-N wall time per row")
    ap.add_argument("--no-mergekit", action="store_true")
    ap.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    pairs = {"dense": _dense_config(args.size_gb), "moe": _moe_config(args.moe_size_gb)}
    if args.build:  # child: build the random parents (imports torch), then exit
        for kind, cfg in pairs.items():
            for tag, seed in (("a", 0), ("b", 1), ("base", 2)):
                build_random(cfg, work / kind / tag, seed)
        return
    env_start = _env_line()
    build = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--build",
        "--workdir",
        str(work),
        "--size-gb",
        str(args.size_gb),
        "--moe-size-gb",
        str(args.moe_size_gb),
    ]
    subprocess.run(build, check=True)
    darwin = str(Path(sys.executable).with_name("darwin"))
    mergekit = MERGEKIT.exists() and not args.no_mergekit
    rows: list[dict] = []
    for kind, cfg in pairs.items():
        a, b, base = (work / kind / t for t in ("a", "b", "base"))
        nbytes = sum(f.stat().st_size for f in a.glob("*.safetensors"))
        budget = 1024 + 4 * largest_tensor_bytes(cfg) / 2**20

        def add_row(
            what: str,
            method: str,
            wall: float,
            rss: float,
            code: int,
            kind: str = kind,
            mb: float = nbytes / 1e6,
            budget: float = budget,
        ) -> None:
            rows.append(
                dict(
                    kind=kind,
                    what=what,
                    method=method,
                    mb=mb,
                    wall=wall,
                    rss=rss,
                    budget=budget,
                    code=code,
                )
            )

        copy_dst = work / kind / "copy"
        wall, rss, code = _best(["cp", "-r", str(a), str(copy_dst)], args.repeat, before=[copy_dst])
        shutil.rmtree(copy_dst, ignore_errors=True)
        ref = wall
        add_row("raw copy", "", wall, rss, code)
        # darwin fsyncs every shard it writes; the same copy made durable, for information
        wall, rss, code = _best(
            ["sh", "-c", 'cp -r "$0" "$1" && sync "$1"/*', str(a), str(copy_dst)],
            args.repeat,
            before=[copy_dst],
        )
        shutil.rmtree(copy_dst, ignore_errors=True)
        add_row("raw copy + fsync", "", wall, rss, code)
        for method in args.methods.split(","):
            cfg_path = work / kind / f"{method}.yaml"
            cfg_path.write_text(yaml.safe_dump(_config(method, a, b, base)))
            out = work / kind / f"out-{method}"
            cmd = [
                darwin,
                "merge",
                str(cfg_path),
                str(out),
                "--force",
                "--threads",
                str(args.threads),
            ]
            wall, rss, code = _best(cmd, args.repeat, {"OMP_NUM_THREADS": "1"})
            shutil.rmtree(out, ignore_errors=True)
            add_row(f"darwin {method}", method, wall, rss, code)
            if mergekit:
                mk_out = work / kind / f"mk-{method}"
                wall, rss, code = _best(
                    [str(MERGEKIT), str(cfg_path), str(mk_out), "--lazy-unpickle"],
                    args.repeat,
                    before=[mk_out],
                )
                shutil.rmtree(mk_out, ignore_errors=True)
                add_row(f"mergekit {method}", method, wall, rss, code)
        for row in rows:
            if row["kind"] == kind:
                row["x_copy"] = row["wall"] / ref
    _print(rows, args, env_start, mergekit)


def _verdicts(rows: list[dict]) -> None:
    """Fill ``speedup`` (mergekit wall / darwin wall) and the per-target verdicts."""
    walls = {(r["kind"], r["what"]): r["wall"] for r in rows if r["code"] == 0}
    for r in rows:
        r["speedup"] = None
        checks = []
        if r["code"] != 0:
            checks.append(f"exit {r['code']}: FAIL")
        if r["what"].startswith("darwin"):
            mk = walls.get((r["kind"], f"mergekit {r['method']}"))
            if mk is not None and r["code"] == 0:
                r["speedup"] = mk / r["wall"]
            if r["method"] == "linear":
                ok = r["x_copy"] <= 2.0
                checks.append(f"<=2x copy: {'ok' if ok else 'FAIL'}")
            if r["method"] == "ties":
                if r["speedup"] is None:
                    checks.append(">=5x mergekit: n/a")
                else:
                    checks.append(f">=5x mergekit: {'ok' if r['speedup'] >= 5 else 'FAIL'}")
            checks.append(f"RSS<budget: {'ok' if r['rss'] < r['budget'] else 'FAIL'}")
        r["verdict"] = "; ".join(checks) if checks else "-"


def _print(rows: list[dict], args: argparse.Namespace, env_start: str, mergekit: bool) -> None:
    _verdicts(rows)
    print(
        f"\nmerge speed: darwin --threads {args.threads} (OMP_NUM_THREADS=1), "
        f"best of {args.repeat}; mergekit {'0.1.5 (.venv-mergekit)' if mergekit else 'not run'}"
    )
    print(f"machine at start: {env_start}")
    print(f"machine at end:   {_env_line()}")
    print(
        "x copy = wall / raw-copy wall (cp -r of parent A, same run; the linear target uses "
        "it); vs mk = mergekit wall / darwin wall; peak RSS via a small launcher (cp shows "
        "its own few MiB); budget = 1 GiB + 4x largest tensor"
    )
    print(
        f"{'pair':6} {'what':20} {'MB':>6} {'wall s':>7} {'x copy':>7} {'vs mk':>6} "
        f"{'peak MiB':>9} {'budget':>7}  verdict"
    )
    for r in rows:
        vs = f"{r['speedup']:6.1f}" if r.get("speedup") else f"{'-':>6}"
        print(
            f"{r['kind']:6} {r['what']:20} {r['mb']:6.0f} {r['wall']:7.2f} {r['x_copy']:7.2f} "
            f"{vs} {r['rss']:9.0f} {r['budget']:7.0f}  {r['verdict']}"
        )


if __name__ == "__main__":
    main()

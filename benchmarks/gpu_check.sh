#!/usr/bin/env bash
# GPU check (issue 10, item 7), for a machine with a CUDA GPU; under 8 minutes on an H100/H200.
#   1. builds the 4-layer real-shape Qwen3.5-35B-A3B pair (benchmarks/scale_merge.py's builder:
#      father multimodal + fused experts in 2 GiB shards, mother text-only per-expert),
#   2. merges it with --device cuda (linear, slerp; GB/s of child written) and on the CPU
#      (linear), and checks the CUDA child equals the CPU child within 1 bf16 ulp on a
#      sample of tensors,
#   3. runs darwin mri on a 2-layer real-shape model on the GPU,
#   4. where vLLM is installed: loads the 2-layer real-shape Qwen3.5-MoE, swaps a merged child
#      in place with darwin's checked swap (push + reference log-probabilities), swaps back,
#      and times a full engine restart against it; the same with SGLang where it is installed.
# Without a GPU it prints one line and exits 0.
#   bash benchmarks/gpu_check.sh [WORKDIR]     (default /tmp/darwin-gpu-check; ~40 GB of disk)
# Dry run of the same steps on a CPU with tiny shapes (checks the script itself):
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_SMALL=true bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DARWIN=${DARWIN:-.venv/bin/darwin}
DEV=${GPU_CHECK_DEVICE:-cuda}
SMALL=${GPU_CHECK_SMALL:-false}
NEED_GB=40; [ "$SMALL" = true ] && NEED_GB=1
if [ "$DEV" != cpu ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing checked"
  exit 0
fi
W=${1:-/tmp/darwin-gpu-check}
rm -rf "$W"; mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
free_gb=$(df -P -BG "$W" | awk 'NR==2 {print int($4)}')
if [ "$free_gb" -lt "$NEED_GB" ]; then
  echo "gpu_check: needs $NEED_GB GB free in $W, only ${free_gb} GB; pass another WORKDIR"; exit 1
fi
t0=$(date +%s)
[ "$DEV" = cpu ] || "$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'gpu: {p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}')"
echo "cpu cores: $(nproc --all)"; uptime

spec() {  # out seed multimodal per_expert layers
  echo "{\"family\": \"qwen3_5_moe\", \"small\": $SMALL, \"layers\": $5, \"shard_bytes\": 2147483648, \"out\": \"$1\", \"seed\": $2, \"multimodal\": $3, \"per_expert\": $4}"
}
"$PY" benchmarks/scale_merge.py --build "[$(spec "$W/father" 0 true false 4), $(spec "$W/mother" 1 false true 4), $(spec "$W/m2" 3 false false 2)]"
echo "built the pair in $(( $(date +%s) - t0 )) s"; du -sh "$W/father" "$W/mother"

cat > "$W/linear.yaml" <<YAML
merge_method: linear
dtype: bfloat16
models:
  - {model: $W/father, parameters: {weight: 0.5}}
  - {model: $W/mother, parameters: {weight: 0.5}}
YAML
cat > "$W/slerp.yaml" <<YAML
merge_method: slerp
dtype: bfloat16
base_model: $W/father
models:
  - {model: $W/father}
  - {model: $W/mother}
parameters: {t: 0.4}
YAML
merge() {  # name yaml device
  local s e bytes
  s=$(date +%s.%N)
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} "$DARWIN" merge "$2" "$W/$1" --device "$3" --threads 4 >/dev/null 2>"$W/$1.log" \
    || { tail -3 "$W/$1.log"; exit 1; }
  e=$(date +%s.%N)
  bytes=$(du -sb "$W/$1" | cut -f1)
  awk -v n="$1" -v d="$3" -v s="$s" -v e="$e" -v b="$bytes" \
    'BEGIN {printf "merge %-14s --device %-5s %6.1f s  %6.2f GB/s of child written\n", n, d, e - s, b / (e - s) / 1e9}'
}
merge cuda-linear "$W/linear.yaml" "$DEV"
merge cuda-slerp "$W/slerp.yaml" "$DEV"
rm -rf "$W/cuda-slerp"
merge cpu-linear "$W/linear.yaml" cpu
"$PY" benchmarks/gpu_check.py compare "$W/cpu-linear" "$W/cuda-linear"
rm -rf "$W/cpu-linear"

# MRI of a 2-layer real-shape model on the GPU (the tiny BPE tokenizer: ids < vocab)
"$PY" benchmarks/gpu_check.py save_tokenizer "$W/m2"
s=$(date +%s)
"$DARWIN" mri "$W/m2" --device "$DEV" --dtype bfloat16 --probes builtin --out "$W/mri" 2>&1 | tail -4
echo "mri of the 2-layer real-shape model on $DEV: $(( $(date +%s) - s )) s"

# vLLM: generate, swap merged weights in (the 4-layer child's layers 0-1 do not fit a
# 2-layer model, so the swap uses a 2-layer linear merge of m2 with itself shifted)
cat > "$W/m2.yaml" <<YAML
merge_method: linear
dtype: bfloat16
models:
  - {model: $W/m2, parameters: {weight: 0.3}}
  - {model: $W/mother2, parameters: {weight: 0.7}}
YAML
if "$PY" -c "import vllm" 2>/dev/null || "$PY" -c "import sglang" 2>/dev/null; then
  "$PY" benchmarks/scale_merge.py --build "[$(spec "$W/mother2" 4 false false 2)]"
  OMP_NUM_THREADS=8 "$DARWIN" merge "$W/m2.yaml" "$W/m2-child" --device "$DEV" >/dev/null 2>&1
  "$PY" benchmarks/gpu_check.py save_tokenizer "$W/m2-child"
  "$PY" benchmarks/gpu_check.py vllm_swap "$W/m2" "$W/m2-child"
  "$PY" benchmarks/gpu_check.py sglang_swap "$W/m2" "$W/m2-child"
else
  echo "vllm / sglang: not installed here; checked weight swaps not checked"
fi
echo "gpu_check: done in $(( $(date +%s) - t0 )) s"

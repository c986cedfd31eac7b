"""Steps of ``benchmarks/gpu_check.sh`` that need Python (see that script for the plan)."""

from __future__ import annotations

import sys
import time


def compare(cpu_dir: str, cuda_dir: str, sample: int = 24) -> None:
    """CUDA child == CPU child within 1 bf16 ulp on a sample of tensors (largest first)."""

    from darwinmerge.checkpoint import CheckpointReader

    rtol = 2.0**-7  # one bf16 ulp, relative
    with CheckpointReader(cpu_dir) as a, CheckpointReader(cuda_dir) as b:
        assert a.keys() == b.keys(), "the two children hold different tensors"
        names = sorted(a.keys(), key=a.nbytes, reverse=True)
        names = names[: sample // 2] + names[len(names) // 2 :][: sample // 2]
        worst, off, total = 0.0, 0, 0
        for name in names:
            x, y = a.get(name).float(), b.get(name).float()
            bad = (x - y).abs() > rtol * y.abs() + 1e-6
            off += int(bad.sum())
            total += x.numel()
            worst = max(worst, float(((x - y).abs() / y.abs().clamp_min(1e-6)).max()))
    frac = off / max(total, 1)
    ok = frac <= 1e-5
    print(
        f"cuda vs cpu child: {len(names)} tensors, {total / 1e9:.2f} G elements; "
        f"{off} elements beyond 1 bf16 ulp ({frac:.1e}; allowed 1e-5), worst rel {worst:.2e}: "
        f"{'ok' if ok else 'FAIL'}"
    )
    if not ok:
        sys.exit(1)


def save_tokenizer(model_dir: str) -> None:
    """The tiny byte-level BPE tokenizer (ids < vocab) next to a random real-shape model."""
    from darwinmerge.zoo.tiny import tiny_tokenizer

    tiny_tokenizer().save_pretrained(model_dir)


def vllm_swap(model_dir: str, child_dir: str) -> None:
    """Generate with vLLM, swap the child's weights in place, generate, swap back."""
    try:
        import vllm
    except ImportError:
        print("vllm: not installed here; in-place weight swap not checked")
        return
    import torch

    from darwinmerge.checkpoint import CheckpointReader

    llm = vllm.LLM(model=model_dir, dtype="bfloat16", enforce_eager=True, max_model_len=256)
    params = vllm.SamplingParams(temperature=0.0, max_tokens=16)
    prompts = ["Question: what is 12 + 7?\nANSWER:", "The sky is"]

    def gen() -> list[list[int]]:
        return [list(o.outputs[0].token_ids) for o in llm.generate(prompts, params, use_tqdm=False)]

    def swap(path: str) -> float:
        with CheckpointReader(path) as r:
            weights = [(k, r.get(k)) for k in r.keys()]
        start = time.perf_counter()
        if hasattr(llm, "apply_model"):
            llm.apply_model(lambda model: model.load_weights(iter(weights)))
        else:
            worker = llm.llm_engine.model_executor.driver_worker
            worker.model_runner.model.load_weights(iter(weights))
        torch.cuda.synchronize()
        return time.perf_counter() - start

    before = gen()
    seconds = swap(child_dir)
    merged = gen()
    swap(model_dir)
    back = gen()
    ok = back == before and merged != before
    print(
        f"vllm {vllm.__version__}: swapped the child's weights in place in {seconds:.1f} s; "
        f"generations changed: {merged != before}; swapping back restored them: "
        f"{back == before}: {'ok' if ok else 'FAIL'}"
    )
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    steps = {"compare": compare, "save_tokenizer": save_tokenizer, "vllm_swap": vllm_swap}
    steps[sys.argv[1]](*sys.argv[2:])

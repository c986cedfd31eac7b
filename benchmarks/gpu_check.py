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
    """darwin's checked vLLM swap on a real-shape model: the child pushed in place
    (VLLMBackend.swap: tmpfs folder + vLLM's reload_weights, then log-probabilities on
    reference prompts against transformers on the same weights), swapped back, and a
    full engine restart timed for comparison. Prints the path taken and the seconds."""
    try:
        import vllm
    except ImportError:
        print("vllm: not installed here; in-place weight swap not checked")
        return
    import torch
    from transformers import AutoModelForCausalLM

    from darwinmerge.checkpoint import CheckpointReader
    from darwinmerge.evaluate.backends.vllm_backend import SwapCheck, VLLMBackend, default_tolerance

    prompts = ["Question: what is 12 + 7?\nANSWER: 19", "The sky is blue and the grass is green"]
    backend = VLLMBackend(model_dir, dtype="bfloat16", enforce_eager=True, max_model_len=256)
    tok = backend.llm.get_tokenizer()
    ids = tuple(tuple(tok(p)["input_ids"]) for p in prompts)

    def check(path: str) -> SwapCheck:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).to("cuda")
        rows = []
        with torch.inference_mode():
            for row in ids:
                lp = model(input_ids=torch.tensor([row], device="cuda")).logits[0].float()
                lp = lp.log_softmax(-1)
                rows.append(tuple(float(lp[i, row[i + 1]]) for i in range(len(row) - 1)))
        del model
        torch.cuda.empty_cache()
        return SwapCheck(ids, tuple(rows), *default_tolerance("bfloat16"))

    def weights(path: str) -> dict[str, torch.Tensor]:
        with CheckpointReader(path) as r:
            return {k: r.get(k) for k in r.keys()}

    child_check, base_check = check(child_dir), check(model_dir)
    ok = True
    for name, path, chk in (("child", child_dir, child_check), ("back", model_dir, base_check)):
        start = time.perf_counter()
        try:
            how = backend.swap(weights(path), chk, lambda p=path: p)
        except Exception as exc:
            print(f"vllm swap {name}: refused: {str(exc).splitlines()[0]}")
            ok = False
            continue
        print(f"vllm swap {name}: {how} in {time.perf_counter() - start:.2f} s (checked)")
    restart = backend.restart(child_dir)
    print(
        f"vllm {vllm.__version__}: full engine restart {restart:.1f} s; "
        f"in-place push trusted: {backend.push_trusted}: {'ok' if ok else 'FAIL'}"
    )
    backend.close()
    if not ok:
        sys.exit(1)


def sglang_swap(model_dir: str, child_dir: str) -> None:
    """darwin's checked SGLang swap on a real-shape model: the child loaded in place with
    ``update_weights_from_disk`` and checked against transformers, swapped back, and a
    full engine restart timed for comparison."""
    try:
        import sglang  # noqa: F401
    except ImportError:
        print("sglang: not installed here; its checked weight swap not checked")
        return
    import torch
    from transformers import AutoModelForCausalLM

    from darwinmerge.evaluate.backends.checked import SwapCheck, default_tolerance
    from darwinmerge.evaluate.backends.sglang_backend import SGLangBackend

    backend = SGLangBackend(model_dir, dtype="bfloat16", mem_fraction_static=0.5)
    tok = backend.tokenizer
    prompts = ["Question: what is 12 + 7?\nANSWER: 19", "The sky is blue and the grass is green"]
    ids = tuple(tuple(tok(p)["input_ids"]) for p in prompts)

    def check(path: str) -> SwapCheck:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).to("cuda")
        rows = []
        with torch.inference_mode():
            for row in ids:
                lp = model(input_ids=torch.tensor([row], device="cuda")).logits[0].float()
                lp = lp.log_softmax(-1)
                rows.append(tuple(float(lp[i, row[i + 1]]) for i in range(len(row) - 1)))
        del model
        torch.cuda.empty_cache()
        return SwapCheck(ids, tuple(rows), *default_tolerance("bfloat16"))

    ok = True
    for name, path in (("child", child_dir), ("back", model_dir)):
        start = time.perf_counter()
        try:
            how = backend.swap({}, check(path), lambda p=path: p)
        except Exception as exc:
            print(f"sglang swap {name}: refused: {str(exc).splitlines()[0]}")
            ok = False
            continue
        print(f"sglang swap {name}: {how} in {time.perf_counter() - start:.2f} s (checked)")
    restart = backend.restart(child_dir)
    print(f"sglang: full engine restart {restart:.1f} s: {'ok' if ok else 'FAIL'}")
    backend.close()
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    steps = {
        "compare": compare,
        "save_tokenizer": save_tokenizer,
        "vllm_swap": vllm_swap,
        "sglang_swap": sglang_swap,
    }
    steps[sys.argv[1]](*sys.argv[2:])

"""Log-prob / GRPO-loss kernels vs eager torch (and Liger-Kernel on GPU), side by side.

    python benchmarks/bench_kernels.py --mode cpu [--tokens 2048] [--hidden 256] [--repeats 3]
    python benchmarks/bench_kernels.py --mode gpu [--tokens 16384] [--hidden 3584]

CPU mode: the chunked torch paths vs eager torch at V = 151,936 in fp32: median time of fwd+bwd and
peak resident memory added by it (each case in a fresh process, peak RSS from VmHWM). GPU mode:
Qwen2-VL-7B shapes in bf16: median time (CUDA events), peak allocated memory beyond inputs and the
returned gradients, achieved GB/s or TFLOP/s and their ratio to the device's limits. A table for
people, a final JSON line for machines; rows are appended to benchmarks/results/kernels.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import append_rows, environment, print_table, rss_peak_extra  # noqa: E402

VOCAB = 151936  # Qwen2-VL
# Dense bf16 tensor-core FLOP/s and HBM bytes/s from the vendors' data sheets (SXM parts).
DEVICE_LIMITS = {"H100": (989e12, 3.35e12), "H200": (989e12, 4.8e12), "A100": (312e12, 2.0e12)}


# ------------------------------------------------------------------------------------------------
# CPU mode
# ------------------------------------------------------------------------------------------------
def _cpu_case(op: str, impl: str, n: int, h: int, v: int, repeats: int) -> dict:
    """Runs in a fresh process: one warm-up, a measured peak, then timed repeats."""
    from dprl.kernels import linear_logprob, selective_logprob
    torch.manual_seed(0)
    targets = torch.randint(0, v, (n,))  # (N,)
    grad = torch.randn(n)  # (N,)
    if op == "selective":
        logits = torch.randn(n, v).requires_grad_()  # (N, V)
        inputs = (logits,)
        if impl == "torch":
            def fwd():
                return torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)
        else:
            def fwd():
                return selective_logprob(logits, targets, inplace_backward=impl == "dprl-inplace")
    else:
        hidden = torch.randn(n, h).requires_grad_()  # (N, H)
        weight = (torch.randn(v, h) / h ** 0.5).requires_grad_()  # (V, H)
        inputs = (hidden, weight)
        if impl == "torch":
            def fwd():
                return torch.log_softmax(hidden @ weight.T, -1).gather(1, targets[:, None]).squeeze(1)
        else:
            def fwd():
                return linear_logprob(hidden, weight, targets)

    def step():
        torch.autograd.grad(fwd(), inputs, grad)

    step()  # warm-up (the in-place variant leaves logits as a gradient: values do not matter)
    peak = rss_peak_extra(step)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"op": op, "impl": impl, "N": n, "H": h if op == "linear" else None, "V": v,
            "dtype": "float32", "median_ms": 1e3 * statistics.median(times),
            "peak_extra_mb": peak / 2 ** 20}


def run_cpu(args) -> list[dict]:
    if not os.access("/proc/self/clear_refs", os.W_OK):
        raise SystemExit("CPU mode needs Linux's /proc/self/clear_refs to measure peak memory")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0",
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    rows = []
    for op, impl in [("selective", "torch"), ("selective", "dprl"), ("selective", "dprl-inplace"),
                     ("linear", "torch"), ("linear", "dprl")]:
        cfg = dict(op=op, impl=impl, n=args.tokens, h=args.hidden, v=args.vocab, repeats=args.repeats)
        res = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], env=env,
                             capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"{op}/{impl} failed:\n{res.stderr}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    for r in rows:  # ratios against eager torch for the same op
        base = next(b for b in rows if b["op"] == r["op"] and b["impl"] == "torch")
        r["time_vs_torch"] = r["median_ms"] / base["median_ms"]
        r["mem_vs_torch"] = r["peak_extra_mb"] / base["peak_extra_mb"]
    return rows


# ------------------------------------------------------------------------------------------------
# GPU mode
# ------------------------------------------------------------------------------------------------
def _cuda_time_and_mem(step, grads_bytes: int, warmup: int, repeats: int) -> tuple[float, float]:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak_mb = (torch.cuda.max_memory_allocated() - base - grads_bytes) / 2 ** 20
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        step()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times), peak_mb


def _liger_grpo(hidden, weight, targets, adv, seq_len):
    """Liger-Kernel's fused linear GRPO loss at the same shapes, or None if it is not importable."""
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss
    except ImportError:
        return None
    b = hidden.shape[0] // seq_len
    loss_fn = LigerFusedLinearGRPOLoss(beta=0.04, use_ref_model=False)
    h3 = hidden.view(b, seq_len, -1)  # (B, T, H)
    ids = targets.view(b, seq_len)  # (B, T)
    mask = torch.ones_like(ids)  # (B, T)

    def fwd():
        out = loss_fn(h3, weight, ids, mask, adv)
        return out[0] if isinstance(out, tuple) else out
    return fwd


def run_gpu(args) -> list[dict]:
    if not torch.cuda.is_available():
        raise SystemExit("GPU mode needs CUDA; no CUDA device here (use --mode cpu)")
    from dprl.kernels import GRPOLossParams, linear_grpo_loss, linear_logprob, selective_logprob
    name = torch.cuda.get_device_name()
    flops_peak, bw_peak = next((lim for key, lim in DEVICE_LIMITS.items() if key in name), (None, None))
    n, h, v, dev, bf16 = args.tokens, args.hidden, args.vocab, "cuda", torch.bfloat16
    torch.manual_seed(0)
    targets = torch.randint(0, v, (n,), device=dev)  # (N,)
    grad = torch.randn(n, device=dev)  # (N,)
    rows = []

    def record(op, impl, ms, mem, work, kind):
        row = {"op": op, "impl": impl, "N": n, "H": h if op != "selective" else None, "V": v,
               "dtype": "bfloat16", "median_ms": ms, "peak_extra_mb": mem}
        rate = work / (ms * 1e-3)
        if kind == "bytes":
            row["GB_per_s"] = rate / 1e9
            row["of_hbm_peak"] = rate / bw_peak if bw_peak else None
        else:
            row["TFLOP_per_s"] = rate / 1e12
            row["of_flop_peak"] = rate / flops_peak if flops_peak else None
        rows.append(row)

    # Logits path: our bytes are one read forward, one read and one write backward.
    logits = torch.randn(n, v, device=dev, dtype=bf16).requires_grad_()  # (N, V)
    nv_bytes = n * v * 2
    impls = {
        "torch": lambda: torch.log_softmax(logits.float(), -1).gather(1, targets[:, None]).squeeze(1),
        "dprl": lambda: selective_logprob(logits, targets),
        "dprl-inplace": lambda: selective_logprob(logits, targets, inplace_backward=True),
    }
    for impl, fwd in impls.items():
        ms, mem = _cuda_time_and_mem(lambda: torch.autograd.grad(fwd(), logits, grad),
                                     0 if impl == "dprl-inplace" else nv_bytes, args.warmup, args.repeats)
        record("selective", impl, ms, mem, 3 * nv_bytes, "bytes")
    del logits

    # Linear path: 8NHV FLOPs (forward GEMM, its recompute and the two gradient GEMMs).
    hidden = (torch.randn(n, h, device=dev) * 0.5).to(bf16).requires_grad_()  # (N, H)
    weight = (torch.randn(v, h, device=dev) / h ** 0.5).to(bf16).requires_grad_()  # (V, H)
    grads_bytes = 2 * (n * h + v * h)
    flops = 8 * n * h * v
    lin = {
        "torch": lambda: torch.log_softmax((hidden @ weight.T).float(), -1).gather(1, targets[:, None]).squeeze(1),
        "dprl": lambda: linear_logprob(hidden, weight, targets),
    }
    for impl, fwd in lin.items():
        try:
            ms, mem = _cuda_time_and_mem(lambda: torch.autograd.grad(fwd(), (hidden, weight), grad),
                                         grads_bytes, args.warmup, args.repeats)
            record("linear", impl, ms, mem, flops, "flops")
        except torch.OutOfMemoryError:
            rows.append({"op": "linear", "impl": impl, "N": n, "H": h, "V": v, "error": "out of memory"})
            torch.cuda.empty_cache()

    # GRPO loss from hidden states vs Liger-Kernel's fused linear GRPO loss, B sequences of T.
    seq_len = args.seq_len
    seq = torch.arange(n // seq_len, device=dev).repeat_interleave(seq_len)  # (N,)
    adv = torch.randn(n // seq_len, device=dev)  # (B,)
    grpo = {"dprl": lambda: linear_grpo_loss(hidden, weight, targets, adv, seq_index=seq,
                                              num_seqs=n // seq_len, params=GRPOLossParams(beta=0.0))[0]}
    liger = _liger_grpo(hidden, weight, targets, adv, seq_len)
    if liger is not None:
        grpo["liger"] = liger
    for impl, fwd in grpo.items():
        try:
            ms, mem = _cuda_time_and_mem(lambda: torch.autograd.grad(fwd(), (hidden, weight)),
                                         grads_bytes, args.warmup, args.repeats)
            record("linear_grpo", impl, ms, mem, flops, "flops")
        except Exception as e:  # a foreign API or OOM must not hide our own rows
            rows.append({"op": "linear_grpo", "impl": impl, "N": n, "H": h, "V": v,
                         "error": f"{type(e).__name__}: {e}"[:200]})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--tokens", type=int, default=None, help="N (cpu default 2048, gpu 16384)")
    p.add_argument("--hidden", type=int, default=None, help="H (cpu default 256, gpu 3584)")
    p.add_argument("--vocab", type=int, default=VOCAB)
    p.add_argument("--seq-len", type=int, default=512, help="GRPO sequence length on GPU")
    p.add_argument("--repeats", type=int, default=None, help="timed runs (cpu 3, gpu 10)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-save", action="store_true", help="do not append to results/kernels.jsonl")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        cfg = json.loads(args.worker)
        print(json.dumps(_cpu_case(cfg["op"], cfg["impl"], cfg["n"], cfg["h"], cfg["v"], cfg["repeats"])))
        return
    gpu = args.mode == "gpu"
    args.tokens = args.tokens or (16384 if gpu else 2048)
    args.hidden = args.hidden or (3584 if gpu else 256)
    args.repeats = args.repeats or (10 if gpu else 3)
    rows = run_gpu(args) if gpu else run_cpu(args)
    env = environment()
    rows = [{"bench": "kernels", "mode": args.mode, **r, **env} for r in rows]
    cols = ["op", "impl", "N", "H", "V", "median_ms", "peak_extra_mb"]
    cols += ["GB_per_s", "of_hbm_peak", "TFLOP_per_s", "of_flop_peak", "error"] if gpu else \
        ["time_vs_torch", "mem_vs_torch"]
    print_table(rows, cols)
    if not args.no_save:
        append_rows("kernels", rows)
    print(json.dumps({"bench": "kernels", "mode": args.mode, "rows": rows}))


if __name__ == "__main__":
    main()

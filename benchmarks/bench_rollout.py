"""Rollout throughput: the colocated vLLM engine against HF `generate`, same prompts and model.

    python benchmarks/bench_rollout.py [--size tiny|medium] [--prompts 8] [--n 4] [--max-tokens 64]

Both backends sit behind the same RolloutEngine contract and get the same image+text prompts,
group size, sampling settings and seed. Throughput is completion tokens per second of wall time
(median of `--repeats` after one warm-up). Other users may share the CPU, so compare the ratio
within one run. Prints a table, a final JSON line, and appends rows to
benchmarks/results/rollout.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from harness import append_rows, environment, print_table  # noqa: E402

from dprl.config import RolloutConfig, TinyModelConfig  # noqa: E402

SIZES = {
    "tiny": TinyModelConfig(),  # 0.8M parameters: per-token overheads dominate
    "medium": TinyModelConfig(hidden_size=512, num_heads=8, num_kv_heads=2, intermediate_size=1408,
                              num_layers=8),  # ~20M parameters
}


def run_backend(backend: str, path: str, requests, cfg: RolloutConfig, repeats: int) -> dict:
    import statistics

    from dprl.rollout import build_rollout_engine

    cfg = RolloutConfig(**{**cfg.__dict__, "backend": backend})
    rollout = build_rollout_engine(path, cfg)
    rollout.generate(requests, seed=0)  # warm-up: first-call allocations, lazy imports
    times, tokens = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        out = rollout.generate(requests, seed=1 + r)
        times.append(time.perf_counter() - t0)
        tokens.append(sum(c.length for c in out))
    t = statistics.median(times)
    tok = statistics.median(tokens)
    return {"backend": backend, "completions": len(out), "tokens": tok, "seconds": t,
            "tokens_per_s": tok / t, "stopped_early": sum(c.finish_reason == "stop" for c in out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--model", default="", help="a local checkpoint instead of a generated model")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=4, help="completions per prompt (GRPO group)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from dprl.models.tiny import make_tiny_model
    from dprl.rollout import RolloutRequest
    from dprl.smoke import demo_image, demo_messages

    cfg = RolloutConfig(n=args.n, max_tokens=args.max_tokens, max_model_len=args.max_tokens + 512)
    requests = [RolloutRequest(demo_messages(i), [demo_image(i)]) for i in range(args.prompts)]
    with tempfile.TemporaryDirectory() as workdir:
        path = args.model or make_tiny_model(os.path.join(workdir, args.size), SIZES[args.size])
        rows = [run_backend(b, path, requests, cfg, args.repeats) for b in ("vllm", "hf")]
    for r in rows:
        r.update({"bench": "rollout", "model": args.model or args.size, "prompts": args.prompts,
                  "n": args.n, "max_tokens": args.max_tokens})
        r["speedup_vs_hf"] = r["tokens_per_s"] / rows[1]["tokens_per_s"]
    print_table(rows, ["model", "backend", "prompts", "n", "completions", "tokens", "stopped_early",
                       "seconds", "tokens_per_s", "speedup_vs_hf"])
    append_rows("rollout", rows)
    print(json.dumps({"bench": "rollout", "device": environment()["device"],
                      "vllm_tokens_per_s": rows[0]["tokens_per_s"], "hf_tokens_per_s": rows[1]["tokens_per_s"],
                      "vllm_over_hf": rows[0]["speedup_vs_hf"]}))


if __name__ == "__main__":
    main()

"""Weight sync from a DeepSpeed ZeRO-3 trainer into the colocated vLLM engine.

    python benchmarks/bench_weight_sync.py [--sizes tiny,large] [--large-layers 16] [--repeats 3]

For each model (the 0.8M tiny model and a random Qwen2-VL of about 200M parameters, both built
locally) and the language-model tensors a frozen-vision run sends, side by side in one process:
- bucketed: `dprl.train.weight_sync.sync_weights` (whole blocks per bucket, `--bucket-mb`),
- one bucket: everything in one engine call,
- per-parameter: one engine call per tensor, the TRL / OpenRLHF pattern. Timed only: on CPU a
  call carrying part of a fused module corrupts the engine, so a correct sync follows it,
- memcpy: copying the same bytes into preallocated tensors, the speed of light for a sync.
Other users may share the CPU, so compare the ratios within one run. Prints a table, a final
JSON line, and appends rows to benchmarks/results/weight_sync.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from harness import append_rows, environment, median_time, print_table  # noqa: E402

from dprl.config import RolloutConfig, TinyModelConfig, TrainerConfig, WeightSyncConfig  # noqa: E402


def model_config(size: str, large_layers: int) -> TinyModelConfig:
    if size == "tiny":
        return TinyModelConfig()
    # ~11M parameters per decoder layer: 16 layers make ~180M (0.7 GB in fp32).
    return TinyModelConfig(hidden_size=1024, num_heads=8, num_kv_heads=2, intermediate_size=2816,
                           num_layers=large_layers, vision_depth=2, vision_embed_dim=128)


def per_parameter_sync(named, rollout) -> None:
    """One engine call per tensor (wrong on CPU for fused modules: timed, then overwritten)."""
    from dprl.train.weight_sync import gathered, hf_name

    for k, (name, p) in enumerate(named):
        with gathered([p]):
            rollout.update_weights([(hf_name(name), p.data)], final=k == len(named) - 1)


def gather_only(named, bucket_mb: float) -> None:
    """The trainer's half of a bucketed sync: ZeRO-3 gathers, nothing sent."""
    from dprl.train.weight_sync import gathered, plan_buckets

    for bucket in plan_buckets(named, int(bucket_mb * 2**20)):
        with gathered([p for _, p in bucket]):
            pass


def memcpy(named, buffers) -> None:
    import torch

    with torch.no_grad():
        for (_, p), dst in zip(named, buffers):
            dst.copy_(p.data)


def bench_size(size: str, args, workdir: str) -> list[dict]:
    import torch

    from dprl.models.loading import load_model
    from dprl.models.tiny import make_tiny_model
    from dprl.rollout.vllm_engine import VLLMEngine
    from dprl.train.engine import build_deepspeed_engine
    from dprl.train.weight_sync import params_to_sync, sync_weights

    path = make_tiny_model(os.path.join(workdir, size), model_config(size, args.large_layers))
    # ZeRO-3 even in a world of one, so the timed path includes the gather a real run does.
    tcfg = TrainerConfig(zero_stage=3, dtype="float32", param_persistence_threshold=0)
    rollout = VLLMEngine(path, RolloutConfig(n=1, max_tokens=4, max_model_len=512), dtype="float32")
    ds_engine, _, _ = build_deepspeed_engine(load_model(path, dtype="float32"), tcfg)
    named = params_to_sync(ds_engine)
    numel = sum(p.ds_numel for _, p in named)
    nbytes = 4 * numel
    buffers = [torch.empty(p.ds_shape, dtype=p.dtype) for _, p in named]
    with torch.no_grad():
        from dprl.train.weight_sync import gathered

        full = []
        for (_, p) in named:  # memcpy sources: the same tensors, already whole
            with gathered([p]):
                full.append(("", p.data.clone()))
    from dprl.train.weight_sync import hf_name

    whole = [(hf_name(n), t) for (n, _), (_, t) in zip(named, full)]  # already gathered

    bucketed_cfg = WeightSyncConfig(bucket_mb=args.bucket_mb)
    stats = sync_weights(ds_engine, rollout, bucketed_cfg)
    times = {
        "bucketed": median_time(lambda: sync_weights(ds_engine, rollout, bucketed_cfg), args.repeats),
        "one_bucket": median_time(lambda: sync_weights(ds_engine, rollout, WeightSyncConfig(bucket_mb=1e9)),
                                  args.repeats),
        "per_parameter": median_time(lambda: per_parameter_sync(named, rollout), args.repeats),
        "memcpy": median_time(lambda: memcpy(full, buffers), args.repeats),
        # The two halves of a sync, to show where its time goes.
        "gather_only": median_time(lambda: gather_only(named, args.bucket_mb), args.repeats),
        "engine_only": median_time(lambda: rollout.update_weights(whole), args.repeats),
    }
    sync_weights(ds_engine, rollout, bucketed_cfg)  # leave the engine correct after the per-tensor calls
    rows = []
    for method, t in times.items():
        rows.append({
            "bench": "weight_sync", "model": size, "params_synced": numel, "tensors": len(named),
            "method": method, "bucket_mb": args.bucket_mb if method == "bucketed" else None,
            "buckets": {"bucketed": stats["sync/buckets"], "gather_only": stats["sync/buckets"],
                        "one_bucket": 1, "engine_only": 1}.get(method, len(named)),
            "seconds": t, "GB_per_s": nbytes / t / 1e9,
            "vs_memcpy": t / times["memcpy"], "per_param_vs_this": times["per_parameter"] / t,
        })
    del rollout, ds_engine
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,large", help="comma list of tiny, large")
    ap.add_argument("--large-layers", type=int, default=16, help="decoder layers of the large model "
                    "(~11M parameters each)")
    ap.add_argument("--bucket-mb", type=float, default=256.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from dprl.config import TrainerConfig as _T
    from dprl.train.engine import init_distributed

    init_distributed(_T())  # the world first; every engine below joins it
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for size in args.sizes.split(","):
            if size not in ("tiny", "large"):
                ap.error(f"--sizes: unknown size {size!r} (tiny, large)")
            rows += bench_size(size, args, workdir)
    print_table(rows, ["model", "params_synced", "tensors", "method", "buckets", "seconds", "GB_per_s",
                       "vs_memcpy", "per_param_vs_this"])
    append_rows("weight_sync", rows)
    summary = {r["model"]: {"bucketed_s": None} for r in rows}
    for r in rows:
        summary[r["model"]][f"{r['method']}_s"] = r["seconds"]
    for m, s in summary.items():
        s["per_param_over_bucketed"] = s["per_parameter_s"] / s["bucketed_s"]
        s["bucketed_over_memcpy"] = s["bucketed_s"] / s["memcpy_s"]
    print(json.dumps({"bench": "weight_sync", "device": environment()["device"], "results": summary}))


if __name__ == "__main__":
    main()

"""One colocated step, run as its own process (`python` for a world of one, `torchrun` for more):
DeepSpeed (ZeRO-3) trainer + a vLLM engine per rank, generate -> train step -> bucketed sync.

Writes what it measured to OUT_DIR/rank<r>.json; the tests assert on those numbers. Usage:
    colocated_run.py MODEL_DIR OUT_DIR [--checks all|sync]
"""
from __future__ import annotations

import argparse
import json
import os

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--checks", choices=["all", "sync"], default="all")
    args = ap.parse_args()

    from dprl.config import RolloutConfig, TrainerConfig, WeightSyncConfig
    from dprl.models.loading import load_model
    from dprl.models.chat import prompt_text
    from dprl.models.logprobs import completion_inputs, completion_logprobs
    from dprl.rollout import RolloutRequest
    from dprl.rollout.vllm_engine import VLLMEngine
    from dprl.smoke import demo_image, demo_messages
    from dprl.train.engine import build_deepspeed_engine, init_distributed
    from dprl.train.staleness import staleness_metrics
    from dprl.train.weight_sync import params_to_sync, plan_buckets, sync_weights

    # fp32 so that rollout engine and trainer agree to ~1e-6; lr large enough that one step
    # visibly moves the log-probs; ZeRO-3 with every tensor partitioned, so the sync really gathers.
    tcfg = TrainerConfig(zero_stage=3, dtype="float32", lr=1e-3, param_persistence_threshold=0)
    init_distributed(tcfg)  # the world first, then the rollout engine joins it
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    rcfg = RolloutConfig(n=2, max_tokens=8, max_model_len=512, seed=0)
    rollout = VLLMEngine(args.model_dir, rcfg, dtype="float32")
    processor = rollout.processor
    result: dict = {"rank": rank, "world": world}

    # This rank's share of the prompts (prompt i goes to rank i % world).
    requests = [RolloutRequest(demo_messages(i), [demo_image(i)]) for i in range(2 * world) if i % world == rank]
    seed = 1000 * rank
    completions = rollout.generate(requests, seed=seed)
    result["completions"] = [{"prompt": c.prompt_index, "tokens": c.token_ids, "finish": c.finish_reason,
                              "logprobs": c.logprobs, "prompt_length": c.prompt_length,
                              "weights_version": c.weights_version} for c in completions]
    if args.checks == "all":
        again = rollout.generate(requests, seed=seed)
        other = rollout.generate(requests, seed=seed + 1)
        result["same_seed_equal"] = [c.token_ids for c in again] == [c.token_ids for c in completions]
        result["other_seed_equal"] = [c.token_ids for c in other] == [c.token_ids for c in completions]

    model = load_model(args.model_dir, dtype="float32")
    ds_engine, _, _ = build_deepspeed_engine(model, tcfg)
    request, fixed = requests[0], completions[0].token_ids
    text = prompt_text(processor, request.messages)

    def trainer_logprobs(ids, **sampling) -> torch.Tensor:
        ds_engine.module.eval()
        return completion_logprobs(ds_engine.module, processor, text, request.images, ids, **sampling)  # (T,)

    before_rollout = rollout.logprobs_of(request, fixed)  # (T,)
    before_trainer = trainer_logprobs(fixed)
    result["pre_step_engine_vs_trainer"] = (before_rollout - before_trainer).abs().max().item()

    # One SFT-style step on this rank's first completion (any loss that moves the weights).
    ds_engine.module.train()
    inputs, P = completion_inputs(processor, text, request.images, fixed)
    labels = inputs["input_ids"].clone()
    labels[:, :P] = -100
    loss = ds_engine(**inputs, labels=labels).loss
    ds_engine.backward(loss)
    ds_engine.step()

    after_trainer = trainer_logprobs(fixed)
    named = params_to_sync(ds_engine)
    # ZeRO-3 really split the weights across ranks (so the sync had to gather them).
    result["local_elements"] = sum(p.ds_tensor.numel() for _, p in named)
    result["full_elements"] = sum(p.ds_numel for _, p in named)
    result["synced_names"] = [n for n, _ in named]
    small = WeightSyncConfig(bucket_mb=0.05)  # a few blocks per bucket at most
    stats_small = sync_weights(ds_engine, rollout, small)
    after_small = rollout.logprobs_of(request, fixed)
    result["sync_small"] = stats_small
    result["buckets_small"] = [[n for n, _ in b] for b in plan_buckets(named, int(small.bucket_mb * 2**20))]
    result["post_sync_engine_vs_trainer"] = (after_small - after_trainer).abs().max().item()
    result["post_sync_vs_pre_sync_engine"] = (after_small - before_rollout).abs().max().item()
    if args.checks == "all":
        # Asleep (a no-op on CPU, KV cache freed on GPU) the rollout engine refuses to generate;
        # the sync wakes it before loading, so it can never keep sampling from weights it missed.
        rollout.sleep()
        try:
            rollout.generate(requests, seed=seed)
            result["generate_while_asleep_raises"] = False
        except RuntimeError:
            result["generate_while_asleep_raises"] = True
        stats_one = sync_weights(ds_engine, rollout, WeightSyncConfig(bucket_mb=1e6))
        after_one = rollout.logprobs_of(request, fixed)
        result["sync_one"] = stats_one
        result["small_vs_one_bucket"] = (after_small - after_one).abs().max().item()

    # The staleness metric on fresh samples: rollout log-probs vs the trainer's, same tokens.
    fresh = rollout.generate(requests[:1], seed=seed + 7)
    banned = rollout.banned_token_ids
    rollout_lp = torch.cat([c.logprob_tensor() for c in fresh])  # (N,)
    trainer_lp = torch.cat([trainer_logprobs(c.token_ids, temperature=rcfg.temperature,
                                             banned_token_ids=banned) for c in fresh])  # (N,)
    result["staleness"] = staleness_metrics(rollout_lp, trainer_lp)
    result["fresh_weights_version"] = fresh[0].weights_version

    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, f"rank{rank}.json"), "w") as fh:
        json.dump(result, fh)
    torch.distributed.barrier()


if __name__ == "__main__":
    main()

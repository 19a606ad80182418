"""TRL's GRPOTrainer on the work bench_grpo_step.py gives dprl, as one contender process.

    python benchmarks/trl_grpo.py MODEL DATA OUT_JSON [--steps 4]

Same model directory, the same prompts and images in the same order (dprl's seeded step order,
TRL's shuffling off), 8 prompts x G = 8 completions per step in one generation batch and one
optimizer step, temperature 0.6, at most 112 completion tokens, the same format + IoU reward
(dprl's reward engine, called through TRL's reward contract), beta 0.04 with a reference model,
one update per rollout (num_iterations 1), TRL's "grpo" loss (token mean per sequence, then mean),
lr 2e-4, fp32 on CPU, plain transformers generation (TRL's default, and what the original
DeepPerception code did). The sampler never draws vision tokens (bad_words_ids), as dprl's does,
since a sampled <|image_pad|> breaks the forward that scores it.

Needs the benchmark extra (pip install -e .[bench]: trl, accelerate). Writes per-step wall
times (from TrainerCallback hooks around each optimizer step), completion lengths and peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

PROMPTS, G, MAX_TOKENS, TEMPERATURE = 8, 8, 112, 0.6


def build_dataset(data: str, steps: int):
    """Rows in the order dprl's GRPO draws them for `steps` steps (rank 0 of 1, seed 0)."""
    from datasets import Dataset

    from dprl.data.kvg import load_samples, open_image
    from dprl.data.prompts import R1_INSTRUCTION
    from dprl.train.grpo_data import step_indices

    samples, _ = load_samples(data, "kvg", os.path.dirname(os.path.abspath(data)), [])
    root = os.path.dirname(os.path.abspath(data))
    order = [i for s in range(steps) for i in step_indices(len(samples), s, PROMPTS, 0, 1, 0)]
    rows = [{"prompt": [{"role": "user", "content": samples[i].question + R1_INSTRUCTION}],
             "image": open_image(samples[i].image, root), "gt_boxes": samples[i].gt_boxes} for i in order]
    return Dataset.from_list(rows)


def _patch_trl_vllm() -> None:
    """Make TRL's colocated vLLM sampler run on the vLLM CPU build, doing the same work.

    Each patch wraps one TRL entry point, in this process only; TRL's trainer, loss and data
    handling are untouched."""
    import torch

    # In-process engine, as dprl runs it: TRL reaches into `llm.llm_engine.model_executor` and
    # passes tensors to the worker, which needs the engine in this process. The KV cache and
    # the AMX permission are what dprl's engine sets up on CPU (dprl/rollout/vllm_engine.py).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if not torch.cuda.is_available() and hasattr(torch._C, "_cpu"):
        torch._C._cpu._init_amx()

    import functools

    import vllm
    from trl.generation import vllm_generation as tv

    # 1. Engine settings. TRL builds `LLM(model=...)` without a dtype, and vLLM's "auto" dtype
    # serves a float32 checkpoint in half precision; dprl's engine runs fp32 in eager mode.
    # The patch adds dtype=float32 and enforce_eager=True (dprl's defaults) to TRL's call.
    tv.LLM = functools.partial(vllm.LLM, dtype="float32", enforce_eager=True, disable_log_stats=True)

    # 2. Weight sync. TRL's colocate sync calls the vLLM model's `load_weights([(name, tensor)])`
    # once per parameter. On CPU, vLLM repacks the linear weights after loading (and fuses q/k/v
    # and gate/up), so those per-tensor loads into the live model fail. The patch hands the same
    # tensors (TRL's own iterator, HF names) to vLLM's in-place `reload_weights` in one call, which
    # maps, fuses and repacks them, then drops the prefix cache, as TRL does, and the encoder
    # cache (image embeddings are cached by image content and would outlive the new weights).
    def sync_weights(self):
        weights = list(self._iter_named_params())
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights,
                                                           "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()

    tv.VLLMGeneration.sync_weights = sync_weights

    # 3. Prompt ids. TRL tokenizes each prompt with the processor, so one image is a run of
    # <|image_pad|> tokens as long as its patch count, and hands those ids with the image to
    # vLLM, whose multimodal processor expands every <|image_pad|> again: vLLM would sample from
    # a prompt that is not the one trained on. The patch gives vLLM each run as the single
    # <|image_pad|> its processor expects (which it expands back to the same length); the
    # trainer keeps its own expanded ids for the forward passes.
    generate = tv.VLLMGeneration.generate

    def generate_collapsed(self, prompts, images, *args, **kwargs):
        pad = self.processing_class.image_token_id
        prompts = [[t for j, t in enumerate(ids) if t != pad or j == 0 or ids[j - 1] != pad] for ids in prompts]
        return generate(self, prompts, images, *args, **kwargs)

    tv.VLLMGeneration.generate = generate_collapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("out_json")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--vllm", action="store_true", help="sample with TRL's colocated vLLM engine")
    args = ap.parse_args()
    if args.vllm:
        _patch_trl_vllm()

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from dprl.config import RewardConfig, load_config
    from dprl.rewards import from_config
    from dprl.rollout import VISION_TOKENS

    reward = from_config(load_config(RewardConfig, None, ["functions=[{name: format}, {name: iou}]"]))

    def format_and_iou(completions, gt_boxes, **_):
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [float(x) for x in reward.score(texts, boxes=gt_boxes)[0]]

    processor = AutoProcessor.from_pretrained(args.model, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32, local_files_only=True)
    for name, p in model.named_parameters():  # dprl freezes the vision tower and merger too
        if ".visual." in f".{name}":
            p.requires_grad_(False)
    banned = [[i] for i in processor.tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))]
    if args.vllm:
        # vLLM has no bad_words_ids; it bans by allowing all other ids, as dprl's engine does.
        # No importance-sampling correction: it adds an "old" forward pass the other contenders
        # don't make (with one update per rollout, the sampler's policy is the trained one).
        ban = {b[0] for b in banned}
        sampler = dict(use_vllm=True, vllm_mode="colocate", vllm_max_model_length=2048,
                       vllm_importance_sampling_correction=False,
                       generation_kwargs={"allowed_token_ids": [i for i in range(len(processor.tokenizer))
                                                                if i not in ban]})
    else:
        sampler = dict(generation_kwargs={"bad_words_ids": banned})
    cfg = GRPOConfig(
        output_dir=os.path.join(os.path.dirname(os.path.abspath(args.out_json)), "trl-run"),
        per_device_train_batch_size=PROMPTS * G, gradient_accumulation_steps=1, num_generations=G,
        steps_per_generation=1, num_iterations=1, max_steps=args.steps, learning_rate=2e-4,
        lr_scheduler_type="cosine", beta=0.04, epsilon=0.2, loss_type="grpo", scale_rewards="group",
        temperature=TEMPERATURE, max_completion_length=MAX_TOKENS, shuffle_dataset=False,
        **sampler, use_cpu=True, bf16=False, fp16=False,
        logging_steps=1, save_strategy="no", report_to=[], seed=0, dataloader_num_workers=0)

    times, lengths, t0 = [], [], [0.0]

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            t0[0] = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - t0[0])

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    trainer = GRPOTrainer(model=model, reward_funcs=[format_and_iou], args=cfg,
                          train_dataset=build_dataset(args.data, args.steps), processing_class=processor,
                          callbacks=[Timer()])
    trainer.train()
    out = {"step_s": times, "length_mean": lengths,
           "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    with open(args.out_json, "w") as fh:
        json.dump(out, fh)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

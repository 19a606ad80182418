"""`dprl smoke`: the whole stack end to end on one machine, with no download.

1. build the tiny offline model into the run directory (or use `model.path`),
2. sample `rollout.n` completions per image+text prompt with vLLM in this process,
3. score the same tokens with transformers,
4. check that the two sets of log-probs agree within `atol`, and write the results.
"""
from __future__ import annotations

import json
import math
import os
import time

from dprl.config import SmokeConfig, save_config
from dprl.data.prompts import R1_INSTRUCTION
from dprl.models.chat import user_turn

# Grounding questions in DeepPerception's prompt format: entity in object-ref tokens, then the
# instruction to think in <think> and answer with a box in <answer> (R1_INSTRUCTION).
_QUESTIONS = [
    "the red circle", "the blue square", "the green triangle", "the yellow bar",
]


def demo_image(index: int, size: int = 112):
    """A small deterministic picture with a few coloured shapes (prompt material only)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (235, 235, 225))
    draw = ImageDraw.Draw(img)
    colours = [(200, 40, 40), (40, 60, 200), (40, 160, 60), (220, 200, 40)]
    for k in range(3):
        c = colours[(index + k) % 4]
        x = 8 + ((index * 37 + k * 31) % (size - 40))
        y = 8 + ((index * 17 + k * 43) % (size - 40))
        draw.ellipse([x, y, x + 28, y + 28], fill=c) if k % 2 == 0 else draw.rectangle([x, y, x + 24, y + 30], fill=c)
    return img


def demo_messages(index: int) -> list[dict]:
    entity = _QUESTIONS[index % len(_QUESTIONS)]
    text = f"Please locate <|object_ref_start|>{entity}<|object_ref_end|> in the image." + R1_INSTRUCTION
    return [user_turn(text)]


def run_smoke(cfg: SmokeConfig) -> dict:
    from dprl.models.chat import prompt_text
    from dprl.models.loading import load_model, load_processor, resolve_checkpoint
    from dprl.models.logprobs import completion_logprobs
    from dprl.rollout import VISION_TOKENS, RolloutRequest
    from dprl.rollout.vllm_engine import VLLMEngine

    os.makedirs(cfg.output_dir, exist_ok=True)
    save_config(cfg, cfg.output_dir)
    timings = {}
    t0 = time.perf_counter()
    model_path = resolve_checkpoint(cfg.model.path, cfg.model.tiny, cfg.output_dir)
    timings["model_build_s"] = time.perf_counter() - t0

    processor = load_processor(model_path)
    requests = [RolloutRequest(demo_messages(i), [demo_image(i)]) for i in range(cfg.num_prompts)]

    t0 = time.perf_counter()
    rollout = VLLMEngine(model_path, cfg.rollout, dtype=cfg.model.dtype)
    timings["engine_build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    completions = rollout.generate(requests)
    timings["generate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    model = load_model(model_path, dtype=cfg.model.dtype)
    banned = processor.tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))
    max_err, n_tokens, rows = 0.0, 0, []
    for c in completions:
        req = requests[c.prompt_index]
        text = prompt_text(processor, req.messages)
        hf = completion_logprobs(model, processor, text, req.images, c.token_ids,
                                 cfg.rollout.temperature, banned, cfg.rollout.top_k, cfg.rollout.top_p)
        err = max((abs(a - b) for a, b in zip(c.logprobs, hf.tolist())), default=0.0)
        if not math.isfinite(err):
            err = float("inf")
        max_err = max(max_err, err)
        n_tokens += len(c.token_ids)
        rows.append({"prompt": c.prompt_index, "tokens": len(c.token_ids), "finish": c.finish_reason,
                     "max_abs_err": err, "sum_logprob_vllm": sum(c.logprobs),
                     "sum_logprob_hf": float(hf.sum()), "text": c.text})
    timings["score_s"] = time.perf_counter() - t0

    result = {
        "ok": max_err <= cfg.atol,
        "model": model_path,
        "dtype": cfg.model.dtype,
        "prompts": cfg.num_prompts,
        "completions": len(completions),
        "completion_tokens": n_tokens,
        "max_abs_logprob_err": max_err,
        "atol": cfg.atol,
        "generate_tokens_per_s": n_tokens / max(timings["generate_s"], 1e-9),
        "timings": timings,
        "samples": rows,
    }
    with open(os.path.join(cfg.output_dir, "results.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    return result


def print_report(result: dict, output_dir: str) -> None:
    print(f"\n{'prompt':>6} {'tokens':>6} {'finish':>7} {'max|dlogp|':>11}  text")
    for r in result["samples"]:
        text = r["text"].replace("\n", " ")[:48]
        print(f"{r['prompt']:>6} {r['tokens']:>6} {r['finish']:>7} {r['max_abs_err']:>11.2e}  {text!r}")
    t = result["timings"]
    print(f"\n{result['completions']} completions, {result['completion_tokens']} tokens; "
          f"vLLM {result['generate_tokens_per_s']:.0f} tok/s; engine build {t['engine_build_s']:.1f}s")
    verdict = "AGREE" if result["ok"] else "DISAGREE"
    print(f"vLLM vs transformers log-probs: max |diff| = {result['max_abs_logprob_err']:.2e} "
          f"(atol {result['atol']:.0e}) -> {verdict}")
    print(f"results: {os.path.join(output_dir, 'results.json')}")

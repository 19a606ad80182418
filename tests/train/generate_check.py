"""Greedy answers of a checkpoint on grounding samples, with vLLM in its own process (one engine per
process): prints one JSON line with the format rate and Acc@0.5, and whether the engine's text
(one batched decode after generation) equals the text vLLM's own incremental detokenizer writes
for the same tokens (a stop string that never occurs turns that on). Usage:
    generate_check.py MODEL_DIR DATA.jsonl [MAX_SAMPLES]
"""
from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np


def main() -> None:
    model_dir, data, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0
    from PIL import Image

    from dprl.config import RolloutConfig
    from dprl.data.sft import load_grounding
    from dprl.rewards import best_iou, format_ok, parse_boxes
    from dprl.rollout import RolloutRequest
    from dprl.rollout.vllm_engine import VLLMEngine

    convs = load_grounding(data, max_samples=limit)
    rows = [json.loads(line) for line in open(data)][:len(convs)]
    # top_k=1 is greedy decoding through the sampling path the engine always uses.
    rollout = VLLMEngine(model_dir, RolloutConfig(n=1, top_k=1, max_tokens=64, max_model_len=512))
    requests = [RolloutRequest(c.prompt_messages(), [Image.open(c.image).convert("RGB")]) for c in convs]
    comps = rollout.generate(requests)
    texts = [c.text for c in comps]
    rollout.cfg = dataclasses.replace(rollout.cfg, stop=["\x00never"])  # vLLM detokenizes
    again = rollout.generate(requests)
    same_tokens = [c.token_ids for c in again] == [c.token_ids for c in comps]
    boxes = parse_boxes(texts)  # (N, 4), NaN rows: no box
    iou = best_iou(boxes, [np.asarray(r["gt_boxes"], np.float32) for r in rows])  # (N,), 0 where no box
    print(json.dumps({"format_rate": float(format_ok(texts).mean()), "acc@0.5": float((iou >= 0.5).mean()),
                      "samples": len(texts), "first": texts[0], "same_tokens": same_tokens,
                      "text_equals_vllm": [c.text for c in again] == texts}))


if __name__ == "__main__":
    main()

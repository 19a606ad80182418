"""In-process vLLM generation for image+text prompts, returning sampled-token log-probs.

The engine runs inside the calling process (no server, no engine subprocess), which is what a
colocated trainer needs. The returned log-probs are those of the distribution actually sampled
from (vLLM's "processed" log-probs: after temperature, masking and top-k/top-p), which is the
quantity a GRPO importance ratio compares with the trainer's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from dprl.config import RolloutConfig

# Tokens a completion must never contain: a sampled <|image_pad|> makes the trainer's forward
# fail ("Image features and image tokens do not match"), and the others open vision spans.
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


@dataclass
class Completion:
    """One sampled completion of one prompt."""

    prompt_index: int
    token_ids: list[int]
    text: str
    logprobs: list[float]  # fp32 log p(token) under the sampling distribution, one per token
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


def _prepare_cpu_process(cfg: RolloutConfig) -> None:
    """Process-wide settings vLLM's CPU backend needs; must run before vLLM is imported."""
    # Keep the engine in this process, so weights can later be pushed into it directly.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(cfg.kv_cache_gib)
    import torch

    if not torch.cuda.is_available() and hasattr(torch._C, "_cpu"):
        # vLLM's CPU attention uses AMX tiles; Linux kills a process that never asked for AMX
        # permission with SIGILL (exit 132) on some batches.
        torch._C._cpu._init_amx()


class VLLMGenerator:
    """Builds one in-process `vllm.LLM` for a local checkpoint and samples from it."""

    def __init__(self, model_path: str, cfg: RolloutConfig, dtype: str = "float32"):
        _prepare_cpu_process(cfg)
        from vllm import LLM

        self.cfg = cfg
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            seed=cfg.seed,  # engine-level seed: per-request seeds crash chunked CPU prefill
            max_model_len=cfg.max_model_len,
            logprobs_mode="processed_logprobs",
            limit_mm_per_prompt={"image": 4, "video": 0},
            enforce_eager=True,
            disable_log_stats=True,
        )
        self.tokenizer = self.llm.get_tokenizer()
        vocab = self.tokenizer.get_vocab()
        banned = {vocab[t] for t in VISION_TOKENS if t in vocab}
        self.vocab_size = self.llm.llm_engine.model_config.get_vocab_size()
        self.allowed_token_ids = [i for i in range(len(self.tokenizer)) if i not in banned]

    def sampling_params(self):
        from vllm import SamplingParams

        c = self.cfg
        return SamplingParams(
            n=c.n,
            temperature=c.temperature,
            top_p=c.top_p,
            top_k=c.top_k,
            max_tokens=c.max_tokens,
            logprobs=0 if c.logprobs else None,  # only the sampled token's log-prob
            allowed_token_ids=self.allowed_token_ids,
        )

    def generate(self, prompts: list[dict], max_tokens: int | None = None) -> list[Completion]:
        """prompts: vLLM prompt dicts ({"prompt": text, "multi_modal_data": {"image": [...]}}).

        Returns `cfg.n` completions per prompt, prompt by prompt (log-probs empty when
        `cfg.logprobs` is off). `max_tokens` overrides the config's for this call.
        """
        params = self.sampling_params()
        if max_tokens is not None:
            params.max_tokens = max_tokens
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        result = []
        for i, out in enumerate(outputs):
            for seq in out.outputs:
                lps = ([step[tok].logprob for step, tok in zip(seq.logprobs, seq.token_ids)]
                       if self.cfg.logprobs else [])
                result.append(Completion(i, list(seq.token_ids), seq.text, lps, seq.finish_reason))
        return result

"""How completions are sampled (the rollout engine's settings)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dprl.config.loader import require


@dataclass
class RolloutConfig:
    """How completions are sampled (vLLM in-process)."""

    n: int = 4  # completions per prompt (the GRPO group size)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1: no top-k cut
    max_tokens: int = 32
    seed: int = 0
    kv_cache_gib: int = 1  # vLLM's CPU KV-cache size in whole GiB (VLLM_CPU_KVCACHE_SPACE)
    max_model_len: int = 2048
    stop: list[str] = field(default_factory=list)  # extra stop strings (EOS always stops)
    backend: Literal["vllm", "hf"] = "vllm"  # hf: transformers generate, the slow baseline
    # GPU only: build vLLM with sleep mode so sleep() frees the KV cache while training runs.
    # vLLM's CPU backend has no sleep mode; there sleep()/wake_up() are no-ops.
    sleep_mode: bool = True
    gpu_memory_utilization: float = 0.5  # GPU only: the engine's share, the rest is training's
    # Return each sampled token's log-prob. Greedy decoding (temperature 0, for evaluation) has
    # no sampling distribution, so it needs logprobs: false.
    logprobs: bool = True
    # vLLM without CUDA graphs / torch.compile. false lets vLLM capture graphs (GPU) or compile
    # (CPU: inductor, minutes of compiling per engine start on a small machine) for faster decoding.
    enforce_eager: bool = True

    def check(self, key: str) -> None:
        require(self.n >= 1, f"{key}n", "at least 1", self.n)
        if self.logprobs:
            require(self.temperature > 0, f"{key}temperature",
                     "a positive number while logprobs is true (greedy decoding has no log-probs "
                     "to compare; set logprobs: false for temperature 0)", self.temperature)
        else:
            require(self.temperature >= 0, f"{key}temperature", "0 (greedy) or a positive number",
                     self.temperature)
        require(0 < self.top_p <= 1, f"{key}top_p", "a number in (0, 1]", self.top_p)
        require(self.top_k == -1 or self.top_k >= 1, f"{key}top_k", "-1 or a positive integer",
                 self.top_k)
        require(self.max_tokens >= 1, f"{key}max_tokens", "at least 1", self.max_tokens)
        require(self.kv_cache_gib > 0, f"{key}kv_cache_gib", "a positive whole number of GiB",
                 self.kv_cache_gib)
        require(self.max_model_len > self.max_tokens, f"{key}max_model_len",
                 f"more than max_tokens={self.max_tokens}", self.max_model_len)
        require(all(isinstance(t, str) and t for t in self.stop), f"{key}stop",
                 "a list of non-empty strings", self.stop)
        require(0 < self.gpu_memory_utilization < 1, f"{key}gpu_memory_utilization",
                 "a fraction in (0, 1)", self.gpu_memory_utilization)

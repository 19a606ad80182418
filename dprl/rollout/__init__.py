"""Rollout generation behind one contract: the colocated vLLM engine and an HF generate baseline."""
from __future__ import annotations

from dprl.config import RolloutConfig
from dprl.rollout.base import VISION_TOKENS, Completion, RolloutEngine, RolloutRequest, answer_text, seeded

__all__ = ["answer_text", "Completion", "RolloutEngine", "RolloutRequest", "VISION_TOKENS", "build_rollout_engine", "seeded"]


def build_rollout_engine(model_path: str, cfg: RolloutConfig, dtype: str = "float32") -> RolloutEngine:
    """The backend `cfg.backend` names; vLLM is imported only when it is the one asked for."""
    if cfg.backend == "vllm":
        from dprl.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(model_path, cfg, dtype)
    from dprl.rollout.hf_engine import HFEngine

    return HFEngine(model_path, cfg, dtype)

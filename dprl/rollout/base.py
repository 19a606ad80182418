"""The rollout contract every generation backend implements (vLLM colocated, HF generate).

A trainer sees only this: `generate` G completions per multimodal prompt, `update_weights` with
the trained tensors, `sleep` / `wake_up` around training, `reset_caches`, and `logprobs_of` to
read the engine's own log-probs of a fixed completion (the staleness check after a sync).
"""
from __future__ import annotations

import abc
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

# Tokens a completion must never contain: a sampled <|image_pad|> makes the trainer's forward
# fail ("Image features and image tokens do not match"), and the others open vision spans.
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


# End-of-turn tokens: they close a completion but are not part of its answer.
END_TOKENS = ("<|im_end|>", "<|endoftext|>")


def answer_text(tokenizer, token_ids) -> str:
    """A completion's text as the reward parser and the evaluator read it, the same for every
    backend: decoded from the token ids with special tokens (<|box_start|>...) kept, which
    vLLM's own `text` drops, and without the end-of-turn tokens."""
    ends = set(tokenizer.convert_tokens_to_ids(list(END_TOKENS)))
    return tokenizer.decode([t for t in token_ids if t not in ends], skip_special_tokens=False)


@dataclass
class RolloutRequest:
    """One prompt: chat messages (HF format, one {"type": "image"} entry per image) + images."""

    messages: list[dict]
    images: list = field(default_factory=list)  # PIL images, in the order the messages use them

    def __post_init__(self):
        n_slots = sum(1 for m in self.messages if isinstance(m.get("content"), list)
                      for part in m["content"] if part.get("type") == "image")
        if n_slots != len(self.images):
            raise ValueError(f"RolloutRequest: the messages have {n_slots} image slot(s) but "
                             f"{len(self.images)} image(s) were given")


@dataclass
class Completion:
    """One sampled completion of one prompt."""

    prompt_index: int
    token_ids: list[int]
    text: str
    logprobs: list[float]  # fp32 log p(token) under the sampling distribution, one per token
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_length: int = 0  # prompt tokens as the engine saw them (image tokens expanded)
    weights_version: int = 0  # the engine's weight version that produced it (see update_weights)

    @property
    def length(self) -> int:
        return len(self.token_ids)

    def logprob_tensor(self) -> torch.Tensor:
        return torch.tensor(self.logprobs, dtype=torch.float32)  # (T,)


class RolloutEngine(abc.ABC):
    """Generation backend of a colocated trainer.

    Weights: `update_weights` takes (HF parameter name, tensor) pairs. One call must carry whole
    modules the engine fuses (q/k/v, gate/up, a weight and its bias): the weight-sync code
    buckets by decoder block for that reason. Only the call with `final=True` resets the
    caches and bumps `weights_version`, so a sync in many buckets costs one reset.
    """

    weights_version: int = 0

    @abc.abstractmethod
    def generate(self, requests: Sequence[RolloutRequest], seed: int | None = None,
                 max_tokens: int | None = None) -> list[Completion]:
        """`n` completions per request (config), request by request. With `seed` the result is
        reproducible (the caller's global RNG state is left as it was). `max_tokens` overrides
        the config's for this call. Temperature 0 decodes greedily; with `logprobs` off in the
        config, `Completion.logprobs` is empty."""

    @abc.abstractmethod
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], final: bool = True) -> None:
        """Loads the given HF-named tensors into the engine's model."""

    @abc.abstractmethod
    def logprobs_of(self, request: RolloutRequest, completion_ids: Sequence[int]) -> torch.Tensor:
        """fp32 log p(token | prefix) of a fixed completion under the current weights, softmax at
        temperature 1 over the full vocabulary (no truncation) -> (T,)."""

    def reset_caches(self) -> None:
        """Drops anything computed with old weights (prefix/KV and encoder caches)."""

    def sleep(self, level: int = 1) -> None:
        """Frees generation memory while training runs (level 2 also drops the weights, so a
        full sync must follow before the next generate). A no-op where unsupported."""

    def wake_up(self) -> None:
        """Makes the engine ready to load weights and generate again."""

    @contextmanager
    def asleep(self, level: int = 1):
        self.sleep(level)
        try:
            yield self
        finally:
            self.wake_up()


@contextmanager
def seeded(seed: int | None):
    """Runs the body with the global torch RNG seeded, then restores the caller's RNG state (the
    trainer's dropout and data order must not depend on how many tokens were sampled)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield

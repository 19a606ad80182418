"""The transformers `generate` backend behind the same contract: the baseline the original
DeepPerception code used, and the fallback where vLLM is not installed.

Prompts are generated one at a time with the G completions of the group as one batch (the
original sampled one completion at a time). Log-probs come from `generate`'s processed scores,
i.e. after vision-token masking, temperature and top-k/top-p, as vLLM reports them.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from dprl.config import RolloutConfig
from dprl.models.chat import prompt_text
from dprl.rollout.base import VISION_TOKENS, Completion, RolloutEngine, RolloutRequest, seeded


class HFEngine(RolloutEngine):
    """`model.generate` on a local checkpoint (its own copy of the weights)."""

    def __init__(self, model_path: str, cfg: RolloutConfig, dtype: str = "float32", device: str = "cpu"):
        from dprl.models.loading import load_model, load_processor

        self.cfg = cfg
        self.model = load_model(model_path, dtype=dtype, device=device)
        self.processor = load_processor(model_path)
        self.tokenizer = self.processor.tokenizer
        self.banned_token_ids = self.tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
        self.params = dict(self.model.named_parameters())
        self.weights_version = 0
        self._calls = 0

    def _inputs(self, request: RolloutRequest) -> dict:
        text = prompt_text(self.processor, request.messages)
        inputs = self.processor(text=[text], images=list(request.images) or None, return_tensors="pt")
        return {k: v.to(self.model.device) for k, v in inputs.items()}

    @torch.no_grad()
    def generate(self, requests: Sequence[RolloutRequest], seed: int | None = None,
                 max_tokens: int | None = None) -> list[Completion]:
        c = self.cfg
        seed = c.seed + self._calls if seed is None else seed
        self._calls += 1
        greedy = c.temperature == 0
        # top_k=0 switches generate's top-k off; None would fall back to the checkpoint's
        # generation_config (50 by default), a truncation the config did not ask for.
        sampling = {} if greedy else dict(temperature=c.temperature, top_p=c.top_p,
                                          top_k=c.top_k if c.top_k > 0 else 0)
        result = []
        with seeded(seed):
            for i, request in enumerate(requests):
                inputs = self._inputs(request)
                P = inputs["input_ids"].shape[1]
                out = self.model.generate(
                    **inputs, do_sample=not greedy, **sampling, max_new_tokens=max_tokens or c.max_tokens,
                    num_return_sequences=c.n, suppress_tokens=self.banned_token_ids,
                    stop_strings=list(c.stop) or None, tokenizer=self.tokenizer,
                    pad_token_id=min(self.eos_ids), output_scores=c.logprobs, return_dict_in_generate=True,
                )
                tokens = out.sequences[:, P:]  # (n, T) padded after each sequence's end
                if c.logprobs:
                    scores = torch.stack(out.scores, dim=1).float()  # (n, T, V) processed logits
                    logp = scores.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (n, T)
                for row in range(tokens.shape[0]):
                    lps = logp[row].tolist() if c.logprobs else []
                    result.append(self._completion(i, tokens[row].tolist(), lps, P))
        return result

    def _completion(self, prompt_index: int, ids: list[int], logps: list[float], P: int) -> Completion:
        end, reason = len(ids), "length"
        for t, tok in enumerate(ids):
            if tok in self.eos_ids:  # the EOS token is kept in the completion, as vLLM does
                end, reason = t + 1, "stop"
                break
        ids, logps = ids[:end], logps[:end]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for stop in self.cfg.stop:
            # generate() stops after the token that completes a stop string and pads the rest;
            # keep tokens up to that one and the text before the stop string (vLLM's default).
            cut = text.find(stop)
            if cut < 0:
                continue
            for t in range(1, len(ids) + 1):
                if stop in self.tokenizer.decode(ids[:t], skip_special_tokens=True):
                    ids, logps, reason = ids[:t], logps[:t], "stop"
                    break
            text = text[:cut]
            break
        return Completion(prompt_index, ids, text, logps, reason, P, self.weights_version)

    @torch.no_grad()
    def logprobs_of(self, request: RolloutRequest, completion_ids: Sequence[int]) -> torch.Tensor:
        from dprl.models.logprobs import completion_logprobs

        text = prompt_text(self.processor, request.messages)
        return completion_logprobs(self.model, self.processor, text, list(request.images),
                                   list(completion_ids))  # (T,)

    @torch.no_grad()
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], final: bool = True) -> None:
        for name, tensor in named_tensors:
            if name not in self.params:
                raise KeyError(f"HFEngine.update_weights: the model has no parameter {name!r}")
            self.params[name].copy_(tensor)
        if final:
            self.weights_version += 1

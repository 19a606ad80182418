"""Generation with plain transformers `generate`: the fallback when vLLM is not available.

Same contract as `VLLMGenerator`: `generate(prompts) -> list[Completion]`, prompts as vLLM prompt
dicts, vision tokens never generated, greedy at temperature 0. Batched with left padding, so
every completion starts right after its own prompt.
"""
from __future__ import annotations

import torch

from dprl.config import RolloutConfig
from dprl.rollout.vllm_engine import VISION_TOKENS, Completion


class HFGenerator:
    def __init__(self, model_path: str, cfg: RolloutConfig, dtype: str = "float32"):
        from dprl.models.loading import load_model, load_processor

        self.cfg = cfg
        self.model = load_model(model_path, dtype=dtype)
        self.processor = load_processor(model_path)
        self.tokenizer = self.processor.tokenizer
        self.banned = [[i] for i in self.tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))
                       if i is not None and i != self.tokenizer.unk_token_id]
        self.eos = self.model.generation_config.eos_token_id or self.tokenizer.convert_tokens_to_ids("<|im_end|>")

    @torch.no_grad()
    def generate(self, prompts: list[dict], max_tokens: int | None = None) -> list[Completion]:
        c = self.cfg
        texts = [p["prompt"] for p in prompts]
        images = [img for p in prompts for img in p.get("multi_modal_data", {}).get("image", [])]
        inputs = self.processor(text=texts, images=images or None, return_tensors="pt",
                                padding=True, padding_side="left")
        greedy = c.temperature == 0
        sample_args = {} if greedy else dict(temperature=c.temperature, top_p=c.top_p,
                                             top_k=c.top_k if c.top_k > 0 else None)
        out = self.model.generate(
            **inputs, do_sample=not greedy, num_return_sequences=c.n,
            max_new_tokens=max_tokens or c.max_tokens, bad_words_ids=self.banned,
            eos_token_id=self.eos, pad_token_id=self.tokenizer.pad_token_id,
            output_scores=c.logprobs, return_dict_in_generate=True, **sample_args)
        P = inputs["input_ids"].shape[1]
        new = out.sequences[:, P:]  # (B * n, T): left padding puts every prompt's end at P
        eos = {self.eos} if isinstance(self.eos, int) else set(self.eos)
        if c.logprobs:  # scores are the processed logits the sampler drew from
            logp = torch.stack(out.scores, dim=1).float().log_softmax(-1)  # (B * n, T, V)
            token_lp = logp.gather(-1, new.unsqueeze(-1)).squeeze(-1)  # (B * n, T)
        result = []
        for row in range(new.shape[0]):
            ids = new[row].tolist()
            stop = next((t + 1 for t, tok in enumerate(ids) if tok in eos), None)
            ids = ids[:stop] if stop else ids
            text = self.tokenizer.decode([t for t in ids if t not in eos], skip_special_tokens=False)
            lps = token_lp[row, :len(ids)].tolist() if c.logprobs else []
            result.append(Completion(row // c.n, ids, text, lps, "stop" if stop else "length"))
        return result

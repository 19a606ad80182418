"""Model FLOPs of a GRPO step, from the model's config and the tokens each pass really ran, for
MFU (model FLOPs utilisation) next to tokens/s.

Counted the usual way (PaLM, appendix B): a matrix multiply of an (n, a) by an (a, b) input is
2nab FLOPs; a token through the language model's linear layers costs 2 x (their parameters) in
the forward and twice that in the backward; attention costs 4 x hidden per (query, key) pair
and layer in the forward (scores and weighted sum), twice that in the backward. The lm_head
counts only for completion positions (the fused loss never computes the others). The vision
tower is left out: it is frozen and runs once per prompt, a small share at these image sizes.
Model FLOPs count the work the model needs, not the work a layout adds: a step that computes
each prompt once counts each prompt once.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextModelShape:
    hidden: int
    layers: int
    linear_params_per_layer: int  # q, k, v, o and the MLP's three projections
    vocab: int

    @classmethod
    def from_config(cls, config) -> "TextModelShape":
        text = getattr(config, "text_config", config)
        h, inter = text.hidden_size, text.intermediate_size
        heads, kv = text.num_attention_heads, getattr(text, "num_key_value_heads", text.num_attention_heads)
        d = getattr(text, "head_dim", None) or h // heads
        attn = h * heads * d * 2 + h * kv * d * 2  # q and o, k and v
        return cls(h, text.num_hidden_layers, attn + 3 * h * inter, text.vocab_size)


def attention_pairs(prompt_len: int, completion_lens: list[int]) -> int:
    """(query, key) pairs a prompt with its completions attends, each completion alone after its
    prompt: P(P+1)/2 for the prompt, T(2P+T+1)/2 for a completion of T tokens."""
    P = prompt_len
    return P * (P + 1) // 2 + sum(T * (2 * P + T + 1) // 2 for T in completion_lens)


def forward_flops(shape: TextModelShape, tokens: int, pairs: int, head_tokens: int) -> float:
    """One forward over `tokens` positions with `pairs` attention pairs, `head_tokens` of which
    reach the lm_head."""
    return (2.0 * shape.linear_params_per_layer * shape.layers * tokens
            + 4.0 * shape.hidden * shape.layers * pairs + 2.0 * shape.hidden * shape.vocab * head_tokens)

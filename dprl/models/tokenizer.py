"""A small byte-level BPE tokenizer with Qwen2-VL's special tokens and chat template, built locally.

Same pipeline as Qwen2's tokenizer (NFC, Qwen2's split regex with single digits, byte-level),
so every string round-trips and numbers tokenise digit by digit as they do in Qwen2-VL. The
merges are learned from a fixed built-in corpus, so the result depends only on `vocab_size`.
"""
from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

# Qwen2's pre-tokenisation regex (contractions, words, single digits, punctuation, spaces).
QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2-VL's special tokens, in its order. Ids follow the learned vocabulary.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Whole tokens for the reasoning format, so a tiny model writes it in 4 tokens, not ~20 bytes.
# Not special: decoding keeps them, and the reward parser reads them in the text.
FORMAT_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

# Qwen2-VL's chat template (system default, image placeholders, generation prompt).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS_LINES = [
    "You are a helpful assistant.",
    "system user assistant",
    "Please locate the object described in the question and output its bounding box.",
    "Output the thinking process in <think> </think> and the final answer in <answer> </answer> tags.",
    "Find the entity in the image. Which one matches the name in the question?",
    "First, I plan: look at each candidate, compare it with what I know, then decide.",
    "Visual analysis: candidate one has a striped body, candidate two has a spotted body.",
    "The first, second, third, fourth, fifth and sixth candidates differ in colour, shade, pattern,",
    "outline, orientation, size and the count of parts such as wings, legs, petals, spots or stripes.",
    "Known features: it is known for a dark outline, round head, long tail and two small fins.",
    "Comparison: only the candidate on the left matches all of the known features.",
    "Conclusion: the object is at the box below. The answer is the letter of the correct option.",
    "aircraft car reptile bird food dog mollusc mammal flower landmark",
    "red green blue yellow orange purple black white grey brown pink light dark pale deep",
    "left right top bottom upper lower middle centre center near far large small tall wide narrow",
    "circle square triangle star diamond ring stripe spot dot band edge corner",
    "Question: Which of the following is shown? Options: A B C D E F G H",
    "(0,0),(1000,1000) [12, 345, 678, 901] {\"bbox_2d\": [10, 20, 30, 40], \"label\": \"x\"}",
]


def _corpus() -> list[str]:
    # Digits are split one per token by the regex, so numbers need no merges of their own.
    return _CORPUS_LINES * 4


def build_tokenizer(vocab_size: int = 1024):
    """Returns a transformers `Qwen2Tokenizer` with Qwen2-VL's special tokens and chat template.

    `vocab_size` caps the learned BPE vocabulary (bytes + merges); special and format tokens
    are added on top, so `len(tokenizer)` is a little larger.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    vocab = bpe.get_vocab()  # token -> id, bytes first, then merges in learned order
    merges = _merges_of(bpe)

    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tok.add_special_tokens(
        {"additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")]}
    )
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in FORMAT_TOKENS])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _merges_of(bpe: Tokenizer) -> list[tuple[str, str]]:
    import json

    model = json.loads(bpe.to_str())["model"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]

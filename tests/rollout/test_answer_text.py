from dprl.models.tokenizer import build_tokenizer
from dprl.rollout import answer_text


def test_keeps_box_tokens_and_drops_end_of_turn():
    tok = build_tokenizer(512)
    body = "<think>left one</think><answer><|box_start|>(1,2),(30,40)<|box_end|></answer>"
    ids = tok(body + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert answer_text(tok, ids) == body
    # What skipping special tokens (vLLM's default text) would lose:
    assert "<|box_start|>" not in tok.decode(ids, skip_special_tokens=True)

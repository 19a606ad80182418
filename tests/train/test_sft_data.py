"""SFT data: loss only on the reply, and padded batches that give every row the positions and the
loss it has alone (mRoPE included)."""
import json

import pytest
import torch

from dprl.data.sft import (IGNORE_INDEX, Conversation, collate, encode, load_grounding, load_grounding_samples,
                           load_knowledge, with_picture)


@pytest.fixture(scope="module")
def model_and_processor(tiny_model_dir):
    from dprl.models.loading import load_model, load_processor

    return load_model(tiny_model_dir), load_processor(tiny_model_dir)


def test_labels_cover_exactly_the_reply_and_its_end(toy_data, model_and_processor):
    _, processor = model_and_processor
    conv = load_grounding(toy_data["train"])[0]
    enc = encode(processor, conv, max_length=1024)
    tok = processor.tokenizer
    learned = enc["labels"][enc["labels"] != IGNORE_INDEX]
    assert tok.decode(learned) == conv.response + "<|im_end|>"
    # Everything before the reply is the prompt, images expanded: no label on any of it.
    P = int((enc["labels"] == IGNORE_INDEX).sum())
    prompt = tok.decode(enc["input_ids"][:P])
    assert prompt.endswith("<|im_start|>assistant\n") and conv.prompt in prompt
    n_pad = int((enc["input_ids"] == tok.convert_tokens_to_ids("<|image_pad|>")).sum())
    assert n_pad == int(enc["image_grid_thw"].prod()) // 4 and n_pad == int(enc["mm_token_type_ids"].sum())
    assert enc["labels"][P:].eq(enc["input_ids"][P:]).all()


def test_a_knowledge_question_asked_over_a_picture_learns_the_same_reply(toy_data, model_and_processor):
    _, processor = model_and_processor
    grounding = load_grounding(toy_data["train"])[0]
    question = Conversation("How do you find the kalo?", "Find the kalo: red, dark marks.", None, "kb-1")
    text, pictured = (encode(processor, c, 1024) for c in (question, with_picture(question, grounding)))
    assert "pixel_values" not in text and pictured["image_grid_thw"].tolist() == encode(
        processor, grounding, 1024)["image_grid_thw"].tolist()

    def reply(enc):
        return enc["input_ids"][enc["labels"] != IGNORE_INDEX].tolist()

    assert reply(text) == reply(pictured)  # same target; only the prompt gained the picture
    assert with_picture(question, grounding).sample_id == f"kb-1@{grounding.sample_id}"
    # A partial reply (the corpus's recall rows) is learned without an end of turn after it.
    start = Conversation(grounding.prompt, "<think>Find the kalo: red, dark marks.", None, "kb-2", partial=True)
    enc = encode(processor, with_picture(start, grounding), 1024)
    assert processor.tokenizer.decode(reply(enc)) == start.response
    assert with_picture(start, grounding).partial


def test_reply_is_cut_at_max_length_and_long_prompt_is_an_error(toy_data, model_and_processor):
    _, processor = model_and_processor
    conv = load_grounding(toy_data["train"])[0]
    full = encode(processor, conv, max_length=1024)
    P = int((full["labels"] == IGNORE_INDEX).sum())
    cut = encode(processor, conv, max_length=P + 3)
    assert cut["input_ids"].numel() == P + 3 and int((cut["labels"] != IGNORE_INDEX).sum()) == 3
    with pytest.raises(ValueError, match="max_length"):
        encode(processor, conv, max_length=P)


def test_padded_batch_rows_keep_their_own_positions_and_loss(toy_data, model_and_processor):
    """A batch mixing image rows of different lengths with a text-only row: each row's mRoPE
    positions and per-token loss equal those of the row run alone."""
    model, processor = model_and_processor
    pad = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    convs = load_grounding(toy_data["train"])[:2] + load_knowledge(toy_data["knowledge"])[:1]
    convs[1].response += " And more words, so this row is the longest one."
    encs = [encode(processor, c, 1024) for c in convs]
    batch = collate([encs[1], encs[2], encs[0]], pad)  # image, text-only, image
    assert batch["attention_mask"].sum(1).tolist() == [encs[i]["input_ids"].numel() for i in (1, 2, 0)]

    def positions(b):
        return model.model.get_rope_index(b["input_ids"], b["mm_token_type_ids"], b.get("image_grid_thw"),
                                          attention_mask=b["attention_mask"])[0]  # (3, B, T)

    def token_losses(b):
        with torch.no_grad():
            logits = model(**{k: v for k, v in b.items() if k != "labels"}).logits.float()  # (B, T, V)
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), b["labels"][:, 1:], reduction="none")  # (B, T-1)

    pos_b, loss_b = positions(batch), token_losses(batch)
    # The image rows sit at different offsets in the batch's pixel list; the text row has no image.
    assert not torch.equal(pos_b[0, 0], pos_b[1, 0])  # mRoPE: an image row's axes differ
    for row, i in enumerate((1, 2, 0)):
        alone = collate([encs[i]], pad)
        L = encs[i]["input_ids"].numel()
        if "image_grid_thw" in alone:
            assert torch.equal(pos_b[:, row, :L], positions(alone)[:, 0])
        torch.testing.assert_close(loss_b[row, :L - 1], token_losses(alone)[0], atol=2e-5, rtol=1e-5)
    text_row = batch["attention_mask"][1].bool()
    assert torch.equal(pos_b[0, 1, text_row], torch.arange(int(text_row.sum())))


def test_missing_fields_and_images_are_named(tmp_path, toy_data):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": "q1", "prompt": "hi", "image": "x.png"}\n')
    with pytest.raises(ValueError, match="response"):
        load_grounding(str(bad))
    # A sample whose image is missing is set aside by id; a file with nothing else fails naming it.
    bad.write_text('{"question_id": "q1", "prompt": "hi", "response": "yo", "image": "x.png"}\n')
    with pytest.raises(ValueError, match="no usable samples.*q1: image .*x.png' does not exist"):
        load_grounding(str(bad))
    good = open(toy_data["train"]).readline().strip()
    row = json.loads(good)
    bad.write_text(json.dumps(dict(row, image=f"{toy_data['root']}/{row['image']}")) + "\n" +
                   '{"question_id": "q1", "prompt": "hi", "response": "yo", "image": "x.png"}\n')
    convs, set_aside = load_grounding_samples(str(bad))
    assert [c.sample_id for c in convs] == [row["question_id"]]
    assert [b["question_id"] for b in set_aside] == ["q1"] and "x.png" in set_aside[0]["error"]

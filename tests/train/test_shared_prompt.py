"""A group as one row (prompt once, then its completions, each seeing the prompt and itself only,
mRoPE positions continuing from the prompt) gives the same log-probs, loss and gradient of every
parameter as one row per completion, in fp32, for both Qwen2-VL and Qwen2.5-VL, mixed prompt
lengths, several images per prompt and padded rows; and the image features computed once per step
stand in for the vision tower inside the forward."""
import pytest
import torch

from dprl.kernels import GRPOLossParams
from dprl.models.chat import prompt_text
from dprl.models.group_attention import use_group_attention
from dprl.models.loading import load_model, load_processor
from dprl.models.logprobs import completion_logprobs
from dprl.smoke import demo_image, demo_messages
from dprl.train.grpo_micro_batches import plan_units
from dprl.train.policy import grpo_policy_loss, token_logprobs
from dprl.train.shared_prompt import (Unit, build_rows, encode_prompts, group_attention_mask,
                                      image_features)

TOL = dict(atol=1e-5, rtol=0)


def _two_images(index: int) -> list[dict]:
    msgs = demo_messages(index)
    msgs[0]["content"].insert(1, {"type": "image"})
    return msgs


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def setup(request, tiny_model_factory):
    path = tiny_model_factory(request.param)
    model, proc = load_model(path), load_processor(path)
    # Packed groups need the group attention; without a layout it is plain SDPA.
    assert use_group_attention(model)
    messages = [demo_messages(0), _two_images(1), demo_messages(2)]
    texts = [prompt_text(proc, m) for m in messages]
    # Different sizes and counts: different numbers of image tokens, so prompt lengths differ.
    images = [[demo_image(0)], [demo_image(1, size=84), demo_image(3, size=56)], [demo_image(2, size=56)]]
    prompts = encode_prompts(proc, model, texts, images)
    g = torch.Generator().manual_seed(0)
    # Groups of 3, 2 and 3 completions of ragged lengths (1 included), so rows are padded.
    prompt_of = [0, 0, 0, 1, 1, 2, 2, 2]
    lens = [5, 1, 9, 7, 3, 2, 11, 4]
    comps = [torch.randint(0, 700, (n,), generator=g).tolist() for n in lens]
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor(lens).cumsum(0)])
    return dict(model=model, proc=proc, texts=texts, images=images, prompts=prompts, comps=comps,
                prompt_of=prompt_of, offsets=offsets, pad=proc.tokenizer.pad_token_id)


def _rows(s, share, features=None, packed=False):
    units = plan_units(s["prompt_of"], share)
    return build_rows(s["prompts"], s["comps"], units, s["pad"], s["offsets"], features, packed=packed)


def test_prompt_lengths_differ_and_rows_are_padded(setup):
    assert len({p.length for p in setup["prompts"]}) == 3
    batch = _rows(setup, True)
    ids = batch.model_inputs["input_ids"]
    assert ids.shape[0] == 3 and (ids == setup["pad"]).any()
    assert batch.seq_ids.tolist() == list(range(8))
    assert batch.token_index.tolist() == list(range(int(setup["offsets"][-1])))
    flat = ids.reshape(-1)
    # Token t > 0 is predicted by the state of token t - 1; token 0 by the prompt's last state.
    within = torch.ones_like(batch.targets, dtype=torch.bool)
    within[setup["offsets"][:-1]] = False
    assert torch.equal(flat[batch.positions[within] + 1], batch.targets[within])
    for s, start in enumerate(setup["offsets"][:-1].tolist()):
        row = int(batch.positions[start]) // ids.shape[1]
        assert int(batch.positions[start]) % ids.shape[1] == setup["prompts"][setup["prompt_of"][s]].length - 1
        assert row == setup["prompt_of"][s]


def test_attention_mask_sees_the_prompt_and_its_own_completion_only():
    seg = torch.tensor([[0, 0, 1, 1, 2, 2, 2, -1]])
    m = group_attention_mask(seg)[0, 0]
    assert m[3].tolist() == [True, True, True, True, False, False, False, False]
    assert m[6].tolist() == [True, True, False, False, True, True, True, False]
    assert m[1].tolist() == [True, True] + [False] * 6  # the prompt is causal over itself
    assert m[7, 7] and not m[:7, 7].any()  # padding sees itself, nothing real sees padding


def test_mrope_positions_continue_from_the_prompt(setup):
    batch = _rows(setup, True)
    pos = batch.model_inputs["position_ids"]  # (3, R, L)
    p0 = setup["prompts"][0]
    # Completion 2 of group 0 starts after the prompt and completion 1 (5 tokens), at the same
    # positions completion 1 starts at.
    start1, start2 = p0.length, p0.length + 5
    assert torch.equal(pos[:, 0, start1], pos[:, 0, start2])
    assert pos[:, 0, start2].tolist() == [p0.next_position] * 3
    # The model's own rule on prompt + completion gives the same positions.
    ids = torch.cat([p0.input_ids, torch.tensor(setup["comps"][1])])[None]
    types = torch.cat([p0.mm_token_type_ids, torch.zeros(len(setup["comps"][1]), dtype=torch.int)])[None]
    want, _ = setup["model"].model.get_rope_index(ids, mm_token_type_ids=types, image_grid_thw=p0.image_grid_thw)
    got = torch.cat([p0.positions, pos[:, 0, start2:start2 + 1]], dim=1)
    assert torch.equal(got, want[:, 0])


@pytest.mark.parametrize("packed", [False, True], ids=["rows", "packed"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_shared_rows_give_the_unshared_log_probs(setup, temperature, packed):
    model = setup["model"]
    with torch.no_grad():
        shared = token_logprobs(model, _rows(setup, True, packed=packed), temperature)  # (N,)
        unshared = token_logprobs(model, _rows(setup, False), temperature)  # (N,)
        alone = torch.cat([completion_logprobs(model, setup["proc"], setup["texts"][p], setup["images"][p], ids,
                                               temperature)
                           for p, ids in zip(setup["prompt_of"], setup["comps"])])
    torch.testing.assert_close(unshared, alone, atol=2e-5, rtol=0)
    torch.testing.assert_close(shared, unshared, **TOL)


def test_image_features_computed_once_stand_in_for_the_tower(setup):
    model = setup["model"]
    feats = image_features(model, setup["prompts"])
    assert [len(f) for f in feats] == [1, 2, 1]
    with torch.no_grad():
        a = token_logprobs(model, _rows(setup, True, feats))
        b = token_logprobs(model, _rows(setup, True))
        c = token_logprobs(model, _rows(setup, True, feats, packed=True))
        d = token_logprobs(model, _rows(setup, True, packed=True))  # the tower runs inside
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch.testing.assert_close(c, d, atol=1e-6, rtol=0)


@pytest.mark.parametrize("packed", [False, True], ids=["rows", "packed"])
@pytest.mark.parametrize("aggregation", ["seq_mean", "token_mean"])
def test_shared_rows_give_the_unshared_loss_and_every_gradient(setup, aggregation, packed):
    model = setup["model"]
    params = GRPOLossParams(beta=0.04, eps_low=0.2, eps_high=0.28, aggregation=aggregation)
    g = torch.Generator().manual_seed(1)
    n = int(setup["offsets"][-1])
    adv = torch.randn(8, generator=g)
    old = torch.randn(n, generator=g) * 0.1 - 3
    ref = torch.randn(n, generator=g) * 0.1 - 3
    banned = torch.tensor([setup["proc"].tokenizer.convert_tokens_to_ids("<|image_pad|>")])
    results = []
    for share in (True, False):
        model.zero_grad()
        batch = _rows(setup, share, packed=packed and share)
        if packed and share:  # ragged completions: the attention runs them in several length buckets
            assert len(batch.model_inputs["group_layout"].buckets) > 1
        loss, metrics, logp = grpo_policy_loss(model, batch, adv, old_logp=old, ref_logp=ref,
                                               params=params, banned=banned)
        loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), metrics, logp, grads))
    (l1, m1, lp1, g1), (l2, m2, lp2, g2) = results
    torch.testing.assert_close(l1, l2, **TOL)
    torch.testing.assert_close(lp1, lp2, **TOL)
    for k in m1:
        torch.testing.assert_close(m1[k], m2[k], **TOL)
    assert set(g1) == set(g2) and any(".visual." in k for k in g1)  # the tower gets a gradient too
    for k in g1:
        scale = max(g2[k].abs().max().item(), 1e-3)
        torch.testing.assert_close(g1[k], g2[k], atol=1e-5 * scale, rtol=1e-4, msg=k)


def test_split_groups_and_micro_batches_add_up_to_the_whole_batch(setup):
    """Rows holding part of a group, in micro-batches of any cut, add up to the same loss and
    gradient when each passes the batch's sequence and token counts."""
    model = setup["model"]
    params = GRPOLossParams(beta=0.04)
    n = int(setup["offsets"][-1])
    adv = torch.linspace(-1, 1, 8)
    ref = torch.full((n,), -3.0)
    model.zero_grad()
    whole, *_ = grpo_policy_loss(model, _rows(setup, True), adv, ref_logp=ref, params=params)
    whole.backward()
    want = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    total = 0.0
    for k, units in enumerate(([Unit(0, (0, 1)), Unit(1, (3,))], [Unit(0, (2,)), Unit(2, (5, 6, 7))],
                               [Unit(1, (4,))])):
        mb = build_rows(setup["prompts"], setup["comps"], units, setup["pad"], setup["offsets"], packed=k == 1)
        loss, *_ = grpo_policy_loss(model, mb, adv[mb.seq_ids], ref_logp=ref[mb.token_index], params=params,
                                    num_seqs=8, num_tokens=n)
        loss.backward()
        total += loss.item()
    assert total == pytest.approx(whole.item(), abs=1e-6)
    for k, p in model.named_parameters():
        if p.grad is not None:
            scale = max(want[k].abs().max().item(), 1e-3)
            torch.testing.assert_close(p.grad, want[k], atol=1e-5 * scale, rtol=1e-4, msg=k)

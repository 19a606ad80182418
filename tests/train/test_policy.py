"""The trainer-side log-probs of sampled completions: padded multimodal batches through the fused
head equal one-sequence-at-a-time full-vocabulary scoring, and the loss gradient matches autograd
through the float64 reference."""
import pytest
import torch

from dprl.kernels import GRPOLossParams, grpo_loss_reference
from dprl.models.chat import prompt_text
from dprl.models.loading import load_model, load_processor
from dprl.models.logprobs import completion_logprobs
from dprl.smoke import demo_image, demo_messages
from dprl.train.policy import grpo_policy_loss, token_logprobs
from dprl.train.sequences import build_policy_batch


@pytest.fixture(scope="module")
def setup(tiny_model_factory):
    path = tiny_model_factory("qwen2_vl")
    model, proc = load_model(path), load_processor(path)
    texts = [prompt_text(proc, demo_messages(i)) for i in range(2)]
    images = [[demo_image(0)], [demo_image(1, size=84)]]  # different sizes: different image token counts
    g = torch.Generator().manual_seed(0)
    lengths = [5, 1, 9, 3]  # ragged: padding inside the batch
    comps = [(i // 2, torch.randint(0, 700, (n,), generator=g).tolist()) for i, n in enumerate(lengths)]
    batch = build_policy_batch(proc, texts, images, comps, proc.tokenizer.pad_token_id)
    return model, proc, texts, images, comps, batch


def test_batch_layout(setup):
    *_, comps, batch = setup
    assert batch.num_seqs == 4 and batch.targets.tolist() == sum((c for _, c in comps), [])
    assert batch.completion_lengths().tolist() == [5, 1, 9, 3]
    ids = batch.model_inputs["input_ids"].reshape(-1)
    # The state at each position predicts the next input token: the completion token itself.
    assert torch.equal(ids[batch.positions + 1], batch.targets)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_fused_logprobs_match_unpadded_full_vocab_scoring(setup, temperature):
    model, proc, texts, images, comps, batch = setup
    with torch.no_grad():
        got = token_logprobs(model, batch, temperature)  # (N,)
    want = torch.cat([completion_logprobs(model, proc, texts[p], images[p], ids, temperature)
                      for p, ids in comps])
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)


def test_loss_and_gradient_match_reference(setup):
    model, proc, texts, images, comps, batch = setup
    params = GRPOLossParams(beta=0.04, eps_low=0.2, eps_high=0.28)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    g = torch.Generator().manual_seed(1)
    old = None
    ref = (torch.randn(len(batch.targets), generator=g) * 0.1 - 3)

    model.zero_grad()
    loss, metrics, logp = grpo_policy_loss(model, batch, adv, old_logp=old, ref_logp=ref, params=params)
    loss.backward()
    fused_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    out = model(**batch.model_inputs)
    logits = out.logits.reshape(-1, out.logits.shape[-1]).index_select(0, batch.positions)  # (N, V)
    lp = torch.log_softmax(logits.double(), -1).gather(1, batch.targets[:, None]).squeeze(1)
    ref_loss, ref_metrics = grpo_loss_reference(lp, adv, None, old_logp=old, ref_logp=ref,
                                                seq_index=batch.seq_index, num_seqs=4, params=params)
    ref_loss.backward()
    torch.testing.assert_close(loss.double(), ref_loss.detach().double(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(metrics["kl"].double(), ref_metrics["kl"].double(), atol=1e-5, rtol=1e-5)
    assert set(fused_grads) == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(fused_grads[name], p.grad.to(fused_grads[name].dtype),
                                       atol=1e-5, rtol=1e-3, msg=name)

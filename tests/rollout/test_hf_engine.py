"""The HF generate backend behind the RolloutEngine contract (no vLLM needed)."""
import pytest
import torch

from dprl.config import RolloutConfig
from dprl.models.chat import prompt_text
from dprl.models.logprobs import completion_logprobs
from dprl.rollout import RolloutRequest, build_rollout_engine
from dprl.rollout.hf_engine import HFEngine
from dprl.smoke import demo_image, demo_messages


@pytest.fixture(scope="module")
def rollout(tiny_model_dir):
    cfg = RolloutConfig(n=3, max_tokens=6, temperature=0.8, top_k=50, top_p=0.9, backend="hf")
    eng = build_rollout_engine(tiny_model_dir, cfg)
    assert isinstance(eng, HFEngine)
    return eng


def _requests():
    return [RolloutRequest(demo_messages(i), [demo_image(i)]) for i in range(2)]


def test_groups_lengths_and_sampling_logprobs(rollout):
    reqs = _requests()
    out = rollout.generate(reqs, seed=3)
    assert [c.prompt_index for c in out] == [0, 0, 0, 1, 1, 1]  # n per prompt, prompt by prompt
    for c in out:
        assert 1 <= c.length <= 6 and len(c.logprobs) == c.length
        assert c.finish_reason == ("length" if c.length == 6 and c.token_ids[-1] not in rollout.eos_ids
                                   else "stop")
        assert not set(c.token_ids) & set(rollout.banned_token_ids)  # no vision token is sampled
        assert c.prompt_length > 16  # the image's patches were expanded into the prompt
        # The reported log-probs are those of the truncated, tempered distribution drawn from.
        req = reqs[c.prompt_index]
        text = prompt_text(rollout.processor, req.messages)
        ref = completion_logprobs(rollout.model, rollout.processor, text, req.images, c.token_ids, 0.8,
                                  rollout.banned_token_ids, 50, 0.9)
        torch.testing.assert_close(c.logprob_tensor(), ref, atol=1e-5, rtol=0)
        assert all(lp <= 0 for lp in c.logprobs)


def test_same_seed_same_samples_and_caller_rng_untouched(rollout):
    reqs = _requests()[:1]
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = rollout.generate(reqs, seed=5)
    assert torch.equal(torch.rand(1), expected_next)  # generation did not move the caller's RNG
    b = rollout.generate(reqs, seed=5)
    c = rollout.generate(reqs, seed=6)
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]


def test_update_weights_changes_logprobs_and_version(rollout, tiny_model_dir):
    req = _requests()[0]
    ids = rollout.generate([req], seed=1)[0].token_ids
    before = rollout.logprobs_of(req, ids)
    version = rollout.weights_version
    name = "lm_head.weight"
    old = rollout.params[name].detach().clone()
    try:
        rollout.update_weights([(name, old + 0.05 * torch.randn_like(old))])
        after = rollout.logprobs_of(req, ids)
        assert rollout.weights_version == version + 1
        assert (after - before).abs().max() > 1e-3
    finally:
        rollout.update_weights([(name, old)])
    torch.testing.assert_close(rollout.logprobs_of(req, ids), before, atol=0, rtol=0)
    with pytest.raises(KeyError, match="no parameter"):
        rollout.update_weights([("model.nonexistent.weight", old)])


def test_stop_string_ends_the_completion(tiny_model_dir):
    cfg = RolloutConfig(n=4, max_tokens=12, backend="hf")
    eng = HFEngine(tiny_model_dir, cfg)
    first = eng.generate(_requests()[:1], seed=0)
    # A stop string taken from a sampled text: generation with it must end there.
    text = next(c.text for c in first if len(c.text) >= 3)
    eng.cfg = RolloutConfig(n=4, max_tokens=12, backend="hf", stop=[text[1:3]])
    again = eng.generate(_requests()[:1], seed=0)
    hit = [c for c in again if c.finish_reason == "stop" and text[1:3] not in c.text]
    assert hit, [c.text for c in again]
    for c in hit:
        assert len(c.logprobs) == len(c.token_ids) >= 1


def test_request_checks_image_slots():
    with pytest.raises(ValueError, match="1 image slot"):
        RolloutRequest(demo_messages(0), [])

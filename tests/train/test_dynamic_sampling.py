"""DAPO dynamic sampling, piece by piece: which groups a step keeps, how many prompts a refill
round draws, and where refill prompts come from."""
import numpy as np
import pytest
import torch

from dprl.rollout.base import Completion
from dprl.train.dynamic_sampling import SampledRound, assemble, count_informative, refill_size, reward_metrics
from dprl.train.grpo_data import refill_indices, step_indices


def _round(tag: str, group_rewards: list[list[float]]) -> SampledRound:
    """A round whose group g belongs to prompt f"{tag}{g}" and has the given rewards."""
    G = len(group_rewards[0])
    prompts = [f"{tag}{g}" for g in range(len(group_rewards))]
    comps = [Completion(prompt_index=g, token_ids=[g, i], text=f"{tag}{g}.{i}", logprobs=[0.0, 0.0],
                        finish_reason="stop") for g in range(len(group_rewards)) for i in range(G)]
    flat = [x for grp in group_rewards for x in grp]
    return SampledRound(prompts, [f"req-{p}" for p in prompts], comps, [c.text for c in comps],
                        torch.tensor(flat, dtype=torch.float32), {"iou": np.array(flat, np.float32) / 2},
                        np.array([x > 0.5 for x in flat], np.float32))


def test_keeps_informative_groups_in_sampling_order_and_reindexes_them():
    r0 = _round("a", [[1, 1], [0, 1], [0, 0]])  # a0 flat, a1 informative, a2 flat
    r1 = _round("b", [[0.2, 0.3], [1, 1], [0.5, 0.1]])  # b0 and b2 informative
    batch, m = assemble([r0, r1], per_step=3, group_size=2)
    assert batch.prompts == ["a1", "b0", "b2"]
    assert batch.requests == ["req-a1", "req-b0", "req-b2"]
    assert [c.text for c in batch.comps] == ["a1.0", "a1.1", "b0.0", "b0.1", "b2.0", "b2.1"]
    assert [c.prompt_index for c in batch.comps] == [0, 0, 1, 1, 2, 2]  # into the new prompt list
    assert batch.texts == [c.text for c in batch.comps]
    torch.testing.assert_close(batch.rewards, torch.tensor([0.0, 1, 0.2, 0.3, 0.5, 0.1]))
    np.testing.assert_allclose(batch.parts["iou"], batch.rewards.numpy() / 2)
    np.testing.assert_array_equal(batch.accuracy, [0, 1, 0, 0, 0, 0])
    assert m == {"sampling/rounds": 2, "sampling/groups_sampled": 6,
                 "sampling/zero_variance_fraction": pytest.approx(0.5), "sampling/shortfall_groups": 0}
    assert r0.comps[2].prompt_index == 1  # the rounds themselves are left as they were


def test_surplus_informative_groups_are_dropped_and_order_is_kept():
    r0 = _round("a", [[0, 1], [2, 2]])
    r1 = _round("b", [[0, 1], [0, 2], [0, 3]])
    batch, m = assemble([r0, r1], per_step=2, group_size=2)
    assert batch.prompts == ["a0", "b0"] and m["sampling/shortfall_groups"] == 0


def test_a_short_batch_is_filled_with_flat_groups_in_sampling_order():
    r0 = _round("a", [[1, 1], [0, 0], [0, 1]])
    r1 = _round("b", [[0, 0], [3, 3], [3, 3]])
    batch, m = assemble([r0, r1], per_step=3, group_size=2)
    # One informative group; the two flat groups sampled first fill the rest, in sampling order.
    assert batch.prompts == ["a0", "a1", "a2"]
    assert m["sampling/shortfall_groups"] == 2
    assert m["sampling/zero_variance_fraction"] == pytest.approx(5 / 6)
    assert [c.prompt_index for c in batch.comps] == [0, 0, 1, 1, 2, 2]


def test_too_few_groups_in_all_rounds_is_an_error():
    with pytest.raises(ValueError, match="fewer than the 4"):
        assemble([_round("a", [[0, 1], [1, 1]])], per_step=4, group_size=2)


def test_reward_metrics_cover_every_sampled_completion():
    r0 = _round("a", [[1, 1], [0, 0]])
    r1 = _round("b", [[0, 1]])
    m = reward_metrics([r0, r1])
    flat = torch.tensor([1.0, 1, 0, 0, 0, 1])
    assert m["reward/mean"] == pytest.approx(float(flat.mean()))
    assert m["reward/std"] == pytest.approx(float(flat.std()))
    assert m["reward/iou"] == pytest.approx(float(flat.mean()) / 2)
    assert m["reward/acc@0.5"] == pytest.approx(0.5)
    assert count_informative([r0, r1], 2) == (1, 3)


@pytest.mark.parametrize("missing,informative,sampled,per_step,expected", [
    (0, 8, 8, 8, 0),  # full: no round
    (2, 6, 8, 8, 3),  # 3/4 informative: ceil(2 / 0.75) = 3
    (1, 4, 8, 8, 2),  # half informative: 2 prompts for 1 group
    (5, 3, 8, 8, 8),  # ceil(5 / 0.375) = 14 -> capped at a step's worth
    (8, 0, 8, 8, 8),  # nothing informative yet: a whole step's worth
    (1, 0, 1, 1, 1),
])
def test_refill_size(missing, informative, sampled, per_step, expected):
    assert refill_size(missing, informative, sampled, per_step) == expected


def test_refill_prompts_are_deterministic_and_independent_of_the_main_order():
    n, per, world = 50, 4, 2
    a = refill_indices(n, step=3, round_=1, count=4, per_rank=per, rank=0, world=world, seed=7, max_rounds=3)
    assert a == refill_indices(n, 3, 1, 4, per, 0, world, 7, 3)  # a pure function of its arguments
    assert refill_indices(n, 3, 1, 2, per, 0, world, 7, 3) == a[:2]  # fewer: a prefix
    others = [refill_indices(n, 3, r, 4, per, k, world, 7, 3) for r in (1, 2) for k in (0, 1)]
    flat = [i for o in others for i in o]
    assert len(set(flat)) == len(flat)  # ranks and rounds of one step draw different prompts
    assert a != step_indices(n, 3 * 3 + 1, per, 0, world, 7)  # not the main stream's slots
    # The main order is untouched by the refill stream's existence.
    assert step_indices(n, 0, per, 0, 1, 7) == [int(i) for i in np.random.default_rng([7, 0]).permutation(n)[:4]]
    with pytest.raises(ValueError):
        refill_indices(n, 3, 0, 4, per, 0, world, 7, 3)  # round 0 is the step's own prompts
    with pytest.raises(ValueError):
        refill_indices(n, 3, 1, 5, per, 0, world, 7, 3)  # more than a step's worth

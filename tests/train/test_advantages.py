import pytest
import torch

from dprl.train.advantages import group_advantages, informative_groups


def test_hand_computed_std_mode():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0,   0.5, 0.5, 0.5, 0.5,   0.9, 0.0, 0.0, 0.0])
    out = group_advantages(r, 4, eps=1e-4)
    std0 = (4 * 0.25 / 3) ** 0.5  # unbiased std of [1, 0, 0, 1]
    expected0 = torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std0 + 1e-4)
    torch.testing.assert_close(out.advantages[:4], expected0)
    assert torch.equal(out.advantages[4:8], torch.zeros(4))  # all equal: exactly zero
    mean2, std2 = 0.225, (sum((x - 0.225) ** 2 for x in [0.9, 0, 0, 0]) / 3) ** 0.5
    torch.testing.assert_close(out.advantages[8], torch.tensor((0.9 - mean2) / (std2 + 1e-4)))
    assert out.zero_variance.tolist() == [False, True, False] and out.num_zero_variance == 1
    torch.testing.assert_close(out.advantages.view(3, 4).sum(1), torch.zeros(3), atol=1e-5, rtol=0)


def test_mean_only_mode_is_dr_grpo():
    r = torch.tensor([3.0, 1.0, 2.0, 2.0])
    out = group_advantages(r, 2, mode="mean_only")
    torch.testing.assert_close(out.advantages, torch.tensor([1.0, -1.0, 0.0, 0.0]))


def test_groups_are_independent_of_order_of_other_groups():
    torch.manual_seed(0)
    r = torch.rand(6 * 5)
    a = group_advantages(r, 5).advantages.view(6, 5)
    perm = torch.randperm(6)
    b = group_advantages(r.view(6, 5)[perm].reshape(-1), 5).advantages.view(6, 5)
    torch.testing.assert_close(a[perm], b)


def test_informative_groups():
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.2, 0.2])
    assert informative_groups(r, 2).tolist() == [False, True, False]


@pytest.mark.parametrize("rewards, g, match", [
    (torch.zeros(6), 4, "multiple of group_size"),
    (torch.zeros(4), 1, "at least 2"),
    (torch.tensor([0.0, float("nan")]), 2, "NaN or inf"),
    (torch.zeros(2, 2), 2, "1-D"),
])
def test_bad_input(rewards, g, match):
    with pytest.raises(ValueError, match=match):
        group_advantages(rewards, g)
    with pytest.raises(ValueError, match="advantage mode"):
        group_advantages(torch.zeros(4), 2, mode="z")

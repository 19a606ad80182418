"""Staleness metric and importance ratio against hand-computed values."""
import math

import pytest
import torch

from dprl.train.staleness import importance_ratio, staleness_metrics


def test_values_by_hand_with_mask():
    rollout = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]])
    trainer = torch.tensor([[-1.0, -1.5, -3.2], [-0.5, -0.7, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])  # the 0.0 is padding
    m = staleness_metrics(rollout, trainer, mask)
    assert m["staleness/tokens"] == 5
    assert m["staleness/abs_logp_diff_max"] == pytest.approx(0.5)
    assert m["staleness/abs_logp_diff_mean"] == pytest.approx((0 + 0.5 + 0.2 + 0 + 0.2) / 5, abs=1e-6)
    assert m["staleness/ratio_max"] == pytest.approx(math.exp(0.5), rel=1e-6)
    assert m["staleness/ratio_min"] == pytest.approx(math.exp(-0.2), rel=1e-6)


def test_ratio_gradient_flows_to_trainer_only():
    lt = torch.tensor([-1.0, -2.0], requires_grad=True)
    lr = torch.tensor([-1.5, -2.0], requires_grad=True)
    r = importance_ratio(lt, lr)
    r.sum().backward()
    torch.testing.assert_close(lt.grad, r.detach())
    assert lr.grad is None


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="shapes differ"):
        staleness_metrics(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="no valid tokens"):
        staleness_metrics(torch.zeros(2), torch.zeros(2), torch.zeros(2, dtype=torch.bool))

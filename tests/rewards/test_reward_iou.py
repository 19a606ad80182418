"""IoU and best IoU against several ground-truth boxes, with hand-computed values."""
import numpy as np
import pytest

from dprl.rewards import best_iou, box_iou
from dprl.rewards.reference import box_iou_reference

NAN = float("nan")


def test_box_iou_values():
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10], [0, 0, 5, 5], [10, 10, 20, 20], [NAN, 0, 1, 1]], dtype=np.float32)
    expected = np.array([[1.0, 0.25, 0.0, 0.0], [25 / 175, 0.0, 25 / 175, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(box_iou(a, b), expected, rtol=1e-6)
    np.testing.assert_allclose(box_iou_reference(a, b), expected, rtol=1e-6)


def test_best_iou_ragged(use_native):
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [NAN] * 4, [0, 0, 10, 10]], dtype=np.float32)
    gt = [
        [[20, 20, 30, 30], [0, 0, 10, 5]],  # best is 0.5
        np.zeros((0, 4)),  # no ground truth: 0
        [0, 0, 10, 10],  # no predicted box: 0
        [5, 0, 15, 10],  # one box as [4]: 50 / 150
    ]
    got = best_iou(pred, gt, use_native=use_native)
    np.testing.assert_allclose(got, [0.5, 0.0, 0.0, 1 / 3], rtol=1e-6)
    same = best_iou(pred, np.array([[0, 0, 10, 5]] * 4, dtype=np.float32), use_native=use_native)
    np.testing.assert_allclose(same, [0.5, 0.5, 0.0, 0.5], rtol=1e-6)


@pytest.mark.parametrize("bad", [[0, 0, 0, 10], [5, 5, 1, 1], [0, 0, np.inf, 1], [NAN, 0, 1, 1]])
def test_best_iou_degenerate_boxes_score_zero(bad, use_native):
    # Even against itself: a box without positive finite area never earns IoU.
    got = best_iou(np.array([bad], np.float32), [[[0, 0, 10, 10], bad]], use_native=use_native)
    assert got.tolist() == [0.0]


def test_best_iou_huge_boxes_stay_finite(use_native):
    huge = [1e30, 0, 3e38, 1e38]
    got = best_iou(np.array([huge], np.float32), [[huge, [0, 0, 3e38, 1e38]]], use_native=use_native)
    assert got.tolist() == [1.0]


def test_best_iou_wrong_shapes_raise(use_native):
    with pytest.raises(ValueError, match="ground-truth"):
        best_iou(np.zeros((2, 4)), [[0, 0, 1, 1]], use_native=use_native)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        best_iou(np.zeros((2, 3)), [[0, 0, 1, 1]] * 2, use_native=use_native)
    with pytest.raises(ValueError, match=r"box \[4\]"):
        best_iou(np.zeros((2, 4)), [[0, 0, 1], [0, 0, 1, 1]], use_native=use_native)

"""dprl._C: builds, matches the numpy reference, and the package falls back cleanly without it."""
import warnings

import numpy as np
import pytest

import dprl.rewards.backend as backend
from dprl.rewards import best_iou, box_iou
from dprl.rewards.reference import box_iou_reference


def test_extension_is_built():
    # setup.sh builds it; a missing build must not pass CI silently.
    assert backend.native_backend() is not None
    assert backend.get_backend().name == "native"


@pytest.mark.parametrize("a, b, expected", [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
    ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
    ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # touching edges: no overlap
    ([0, 0, 10, 10], [2, 2, 4, 4], 4 / 100),  # contained
    ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
    ([10, 10, 0, 0], [0, 0, 10, 10], 0.0),  # swapped corners: invalid box
    ([0, 0, 0, 10], [0, 0, 10, 10], 0.0),  # zero width
    ([np.nan] * 4, [0, 0, 10, 10], 0.0),  # "no box parsed"
    ([0, 0, np.inf, 10], [0, 0, 10, 10], 0.0),
    ([0, 0, 1e38, 1e38], [0, 0, 3e38, 3e38], 1 / 9),  # float32 products would overflow
])
def test_hand_computed(a, b, expected):
    for fn in (box_iou, box_iou_reference):
        got = fn(np.array([a], np.float32), np.array([b], np.float32))
        assert got.shape == (1, 1) and got.dtype == np.float32
        assert got[0, 0] == pytest.approx(expected, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("n, m", [(0, 3), (3, 0), (1, 1), (7, 5), (700, 300)])  # 210k pairs: threaded
def test_matches_reference_on_random_and_degenerate_boxes(n, m):
    rng = np.random.default_rng(n * 1000 + m)

    def boxes(k):
        xy = rng.uniform(-50, 1050, size=(k, 2))
        wh = rng.uniform(-20, 400, size=(k, 2))  # some negative: invalid boxes
        out = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        bad = rng.random(k) < 0.05
        out[bad, rng.integers(0, 4)] = rng.choice([np.nan, np.inf, -np.inf])
        return out

    a, b = boxes(n), boxes(m)
    got = box_iou(a, b)
    np.testing.assert_allclose(got, box_iou_reference(a, b), rtol=1e-6, atol=1e-7)
    assert got.shape == (n, m) and np.isfinite(got).all() and (got >= 0).all() and (got <= 1).all()


def test_thread_count_does_not_change_the_result():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 100, (512, 4)).astype(np.float32)
    a[:, 2:] += a[:, :2]
    one = backend.native_backend().box_iou(a, a, max_threads=1)
    two = backend.native_backend().box_iou(a, a, max_threads=2)
    assert np.array_equal(one, two)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"a must have shape \[N, 4\]"):
        box_iou(np.zeros((3, 5)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"b must have shape \[N, 4\]"):
        backend.native_backend().box_iou(np.zeros((1, 4), np.float32), np.zeros((4,), np.float32))
    with pytest.raises(TypeError, match="must hold numbers"):
        box_iou(np.array([["a"] * 4]), np.zeros((1, 4)))


def test_best_iou_over_several_ground_truths():
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [np.nan] * 4], np.float32)
    gts = [np.array([[50, 50, 60, 60], [0, 0, 10, 20]]), np.zeros((0, 4)), [[0, 0, 10, 10]]]
    np.testing.assert_allclose(best_iou(pred, gts), [0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="ground-truth lists"):
        best_iou(pred, gts[:2])


def test_fallback_without_extension_warns_once_and_agrees(monkeypatch):
    a = np.array([[0, 0, 10, 10], [1, 1, 5, 5]], np.float32)
    expected = box_iou(a, a)
    monkeypatch.setattr(backend, "_resolved", False)
    monkeypatch.setattr(backend, "_native", None)
    import builtins

    real_import = builtins.__import__

    def no_ext(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "dprl" and fromlist and "_C" in fromlist:
            raise ImportError("simulated missing build")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_ext)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = box_iou(a, a)
        second = box_iou(a, a)
    assert [str(w.message) for w in caught if "dprl._C" in str(w.message)].__len__() == 1
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)

"""Batched box IoU, in C++ when dprl._C is built (see dprl.rewards.backend)."""
from __future__ import annotations

import numpy as np

from dprl.rewards.backend import get_backend


def _as_boxes(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape [N, 4] (x1, y1, x2, y2), got {tuple(arr.shape)}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def box_iou(a, b) -> np.ndarray:
    """Pairwise IoU: a [N, 4], b [M, 4] boxes (x1, y1, x2, y2) -> float32 [N, M].

    A box with a non-finite coordinate (a NaN row means "no box"), zero or negative width or
    height has IoU 0 with everything, so the result is always finite and in [0, 1].
    """
    return get_backend().box_iou(_as_boxes(a, "a"), _as_boxes(b, "b"))


def ragged_boxes(gt_boxes, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth per sample -> (flat float32 [K, 4], offsets int64 [N + 1]).

    gt_boxes: an [N, 4] array (one box each) or N items, each a box [4] or boxes [K_i, 4]
    (K_i may be 0).
    """
    if isinstance(gt_boxes, np.ndarray) and gt_boxes.ndim == 2:
        flat = _as_boxes(gt_boxes, "gt_boxes")  # (N, 4)
        if len(flat) != n:
            raise ValueError(f"got {n} predicted boxes but {len(flat)} ground-truth boxes")
        return flat, np.arange(n + 1, dtype=np.int64)
    if len(gt_boxes) != n:
        raise ValueError(f"got {n} predicted boxes but {len(gt_boxes)} ground-truth lists")
    try:  # one box per sample, as a list of lists: no per-sample work
        flat = np.asarray(gt_boxes, dtype=np.float32)
    except (ValueError, TypeError):
        flat = None
    if flat is not None and flat.shape == (n, 4):
        return np.ascontiguousarray(flat), np.arange(n + 1, dtype=np.int64)
    parts = []
    for i, g in enumerate(gt_boxes):
        arr = np.asarray(g, dtype=np.float32)
        if arr.size % 4:
            raise ValueError(f"gt_boxes[{i}] must be a box [4] or boxes [K, 4], got {arr.shape}")
        parts.append(arr.reshape(-1, 4))  # (K_i, 4)
    counts = np.array([len(p) for p in parts], dtype=np.int64)  # (N,)
    offsets = np.zeros(n + 1, dtype=np.int64)  # (N + 1,)
    np.cumsum(counts, out=offsets[1:])
    flat = np.concatenate(parts) if parts else np.zeros((0, 4), np.float32)  # (K, 4)
    return np.ascontiguousarray(flat, dtype=np.float32), offsets


def best_iou(pred, gt_boxes, use_native: bool | None = None, max_threads: int = 0) -> np.ndarray:
    """Best IoU of each predicted box against its own ground-truth boxes.

    pred: [N, 4]; gt_boxes: [N, 4] or N arrays of shape [K_i, 4] (K_i >= 0) or [4]. Returns
    float32 [N]; a sample with no ground truth or no predicted box scores 0. KVG-Bench accuracy
    takes the best over the GT boxes.
    """
    p = _as_boxes(pred, "pred")  # (N, 4)
    flat, offsets = ragged_boxes(gt_boxes, len(p))
    return get_backend(use_native).best_iou_ragged(p, flat, offsets, max_threads)

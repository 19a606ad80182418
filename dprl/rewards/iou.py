"""Batched box IoU, in C++ when dprl._C is built."""
from __future__ import annotations

import numpy as np

from dprl._ext import native
from dprl.rewards.reference import box_iou_reference


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
    a32, b32 = _as_boxes(a, "a"), _as_boxes(b, "b")
    ext = native()
    if ext is not None:
        return ext.box_iou(a32, b32)
    return box_iou_reference(a32, b32)


def best_iou(pred, gt_boxes: list) -> np.ndarray:
    """Best IoU of each predicted box against its own ground-truth boxes.

    pred: [N, 4]; gt_boxes: N arrays of shape [K_i, 4] (K_i >= 0). Returns float32 [N]; a sample
    with no ground truth scores 0. KVG-Bench accuracy takes the best over the GT boxes.
    """
    p = _as_boxes(pred, "pred")
    if len(gt_boxes) != len(p):
        raise ValueError(f"got {len(p)} predicted boxes but {len(gt_boxes)} ground-truth lists")
    out = np.zeros(len(p), dtype=np.float32)  # (N,)
    for i, gt in enumerate(gt_boxes):
        g = _as_boxes(np.reshape(np.asarray(gt, dtype=np.float32), (-1, 4)), f"gt_boxes[{i}]")
        if len(g):
            out[i] = box_iou(p[i : i + 1], g).max()
    return out

"""Plain numpy reference implementations: the test oracle and the fallback without dprl._C."""
from __future__ import annotations

import numpy as np


def box_iou_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of a: [N, 4] and b: [M, 4] float32 boxes (x1, y1, x2, y2) -> [N, M] float32.

    Same rules as the C++ path: a box counts only if finite with positive width and height;
    otherwise its IoU is 0. Arithmetic in float64, as in C++, so huge coordinates stay finite.
    """
    a64 = np.asarray(a, dtype=np.float32).astype(np.float64)  # (N, 4)
    b64 = np.asarray(b, dtype=np.float32).astype(np.float64)  # (M, 4)
    with np.errstate(invalid="ignore", over="ignore"):
        valid_a = np.isfinite(a64).all(1) & (a64[:, 2] > a64[:, 0]) & (a64[:, 3] > a64[:, 1])  # (N,)
        valid_b = np.isfinite(b64).all(1) & (b64[:, 2] > b64[:, 0]) & (b64[:, 3] > b64[:, 1])  # (M,)
        iw = np.minimum(a64[:, None, 2], b64[None, :, 2]) - np.maximum(a64[:, None, 0], b64[None, :, 0])  # (N, M)
        ih = np.minimum(a64[:, None, 3], b64[None, :, 3]) - np.maximum(a64[:, None, 1], b64[None, :, 1])  # (N, M)
        inter = iw * ih  # (N, M)
        area_a = (a64[:, 2] - a64[:, 0]) * (a64[:, 3] - a64[:, 1])  # (N,)
        area_b = (b64[:, 2] - b64[:, 0]) * (b64[:, 3] - b64[:, 1])  # (M,)
        union = area_a[:, None] + area_b[None, :] - inter  # (N, M)
        ok = valid_a[:, None] & valid_b[None, :] & (iw > 0) & (ih > 0) & (union > 0) & np.isfinite(union)
        iou = np.where(ok, inter / np.where(ok, union, 1.0), 0.0)
    return iou.astype(np.float32)

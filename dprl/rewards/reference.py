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


# ---------------------------------------------------------------------------------------------
# Text rules, stated as plainly as possible: regular expressions on bytes (ASCII only, so invalid
# UTF-8 never matters) and bytes.find. csrc/box_parse.cpp implements the same rules by hand.
# ---------------------------------------------------------------------------------------------
import math
import re
from dataclasses import replace

from dprl.rewards.options import BoxFormat, Coords, ParseOptions, Pick, Scope, Swapped
from dprl.rewards.terms import TermKind

_FLT_MAX = float(np.finfo(np.float32).max)
_B = rb"[ \t\r\n]*"  # blanks
_NUM = rb"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
_F = _B + _NUM + _B  # one number field
_SYNTAX = {
    BoxFormat.POINTS: rb"\(" + _F + rb"," + _F + rb"\)" + _B + rb"," + _B + rb"\(" + _F + rb"," + _F + rb"\)",
    BoxFormat.LIST: rb"\[" + _F + rb"," + _F + rb"," + _F + rb"," + _F + rb"\]",
    BoxFormat.TUPLE: rb"\(" + _F + rb"," + _F + rb"," + _F + rb"," + _F + rb"\)",
}
_PATTERNS: dict[tuple[BoxFormat, ...], re.Pattern] = {}
_LETTER = re.compile(_B + rb"\(?([A-Za-z])(?![A-Za-z0-9])")


def _box_pattern(formats: tuple[BoxFormat, ...]) -> re.Pattern:
    key = tuple(sorted(set(formats), key=lambda f: f.value))
    if key not in _PATTERNS:
        _PATTERNS[key] = re.compile(b"|".join(b"(?:" + _SYNTAX[f] + b")" for f in key))
    return _PATTERNS[key]


def to_bytes(text) -> bytes:
    """str -> UTF-8 (lone surrogates passed through, as the C++ path does); bytes unchanged."""
    if isinstance(text, str):
        return text.encode("utf-8", "surrogatepass")
    if isinstance(text, bytes):
        return text
    raise TypeError(f"each text must be str or bytes, got {type(text).__name__}")


def answer_span_reference(b: bytes) -> tuple[int, int] | None:
    """[begin, end) between the first <answer> and the first </answer> after it, or None."""
    a = b.find(b"<answer>")
    if a < 0:
        return None
    e = b.find(b"</answer>", a + 8)
    return None if e < 0 else (a + 8, e)


def format_ok_reference(b: bytes) -> bool:
    """blanks <think> .. first </think> blanks <answer> .. first </answer> blanks, whole text."""
    p = len(b) - len(b.lstrip(b" \t\r\n"))
    if not b.startswith(b"<think>", p):
        return False
    p = b.find(b"</think>", p + 7)
    if p < 0:
        return False
    p += 8
    p += len(b[p:]) - len(b[p:].lstrip(b" \t\r\n"))
    if not b.startswith(b"<answer>", p):
        return False
    p = b.find(b"</answer>", p + 8)
    return p >= 0 and b[p + 9:].strip(b" \t\r\n") == b""


def parse_box_reference(b: bytes, opt: ParseOptions, image_wh=None, input_wh=None) -> list[float]:
    """One text -> [x1, y1, x2, y2] as float32 values, or four NaNs."""
    nan = [math.nan] * 4
    lo, hi = 0, len(b)
    if opt.scope is Scope.ANSWER:
        span = answer_span_reference(b)
        if span is None:
            return nan
        lo, hi = span
    chosen = None
    for m in _box_pattern(opt.formats).finditer(b, lo, hi):
        chosen = [g for g in m.groups() if g is not None]
        if opt.pick is Pick.FIRST:
            break
    if chosen is None:
        return nan
    v = [float(g) for g in chosen]
    scale = opt.coords is Coords.FRACTION or (
        opt.coords is Coords.AUTO and all(0.0 <= x <= 1.0 for x in v))
    if scale:
        v = [x * 1000.0 for x in v]
    limit = (1000.0, 1000.0)
    if opt.coords is Coords.PIXELS:
        inp = image_wh if input_wh is None else input_wh
        v = [x * float(image_wh[k % 2]) / float(inp[k % 2]) for k, x in enumerate(v)]
        limit = (float(image_wh[0]), float(image_wh[1]))
    if not all(math.isfinite(x) and abs(x) <= _FLT_MAX for x in v):
        return nan
    if v[0] > v[2] or v[1] > v[3]:
        if opt.swapped is Swapped.REJECT:
            return nan
        v = [min(v[0], v[2]), min(v[1], v[3]), max(v[0], v[2]), max(v[1], v[3])]
    if opt.clamp:
        v = [min(max(x, 0.0), limit[k % 2]) for k, x in enumerate(v)]
    return [float(np.float32(x)) for x in v]


def analyze_reference(texts, opt: ParseOptions, image_wh=None, input_wh=None):
    """texts -> (boxes float32 [N, 4] with NaN rows, format-ok uint8 [N])."""
    n = len(texts)
    boxes = np.full((n, 4), np.nan, dtype=np.float32)  # (N, 4)
    fmt = np.zeros(n, dtype=np.uint8)  # (N,)
    for i, t in enumerate(texts):
        b = to_bytes(t)
        fmt[i] = format_ok_reference(b)
        size = None if image_wh is None else image_wh[i]
        inp = None if input_wh is None else input_wh[i]
        boxes[i] = parse_box_reference(b, opt, size, inp)
    return boxes, fmt


def parse_letter_reference(b: bytes, scope: Scope = Scope.ANSWER) -> str:
    """The choice letter, upper-cased: blanks, optional "(", one ASCII letter not followed by a
    letter or digit; "" when there is none."""
    lo, hi = 0, len(b)
    if scope is Scope.ANSWER:
        span = answer_span_reference(b)
        if span is None:
            return ""
        lo, hi = span
    m = _LETTER.match(b, lo, hi)
    return m.group(1).decode().upper() if m else ""


def best_iou_ragged_reference(pred: np.ndarray, gt: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """pred [N, 4], gt [K, 4], offsets [N + 1] -> float32 [N]: best IoU over each sample's GT."""
    out = np.zeros(len(pred), dtype=np.float32)  # (N,)
    for i in range(len(pred)):
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        if hi > lo:
            out[i] = box_iou_reference(pred[i : i + 1], gt[lo:hi]).max()
    return out


# ---------------------------------------------------------------------------------------------
# Reward terms: the formulas csrc/rewards.cpp applies per text, here over whole arrays.
# ---------------------------------------------------------------------------------------------
def format_score_reference(format_ok: np.ndarray, answer_boxes: np.ndarray) -> np.ndarray:
    """format_ok [N], the boxes read from the answer [N, 4] -> float32 [N]: 0.5 per half."""
    has_box = ~np.isnan(answer_boxes).any(axis=1)  # (N,)
    return 0.5 * format_ok.astype(np.float32) + 0.5 * has_box.astype(np.float32)


def iou_score_reference(kind: TermKind, tau: float | None, iou: np.ndarray) -> np.ndarray:
    """An IoU term of the best IoU per text, iou float32 [N] -> float32 [N]."""
    if kind is TermKind.IOU:
        return iou
    if kind is TermKind.IOU_THRESHOLD:
        return np.where(iou >= np.float32(tau), iou, np.float32(0))
    if kind is TermKind.IOU_SQUARED:
        return iou * iou
    if kind is TermKind.ACC:
        return (iou >= np.float32(tau)).astype(np.float32)
    raise ValueError(f"{kind!r} is not an IoU term")


def weighted_total_reference(weights, parts, n: int) -> np.ndarray:
    """sum_k weights[k] * parts[k] (each float32 [n]) from 0, in float32 and in term order, as
    the C++ pass adds them."""
    total = np.zeros(n, dtype=np.float32)  # (N,)
    for w, part in zip(weights, parts):
        total += np.float32(w) * part
    return total


def score_batch_reference(texts, terms, opt: ParseOptions, gt=None, offsets=None, image_wh=None,
                          input_wh=None) -> tuple[np.ndarray, np.ndarray]:
    """Every built-in term in one call, as dprl._C.score_batch: terms have .kind (TermKind), .tau
    and .weight; gt [K, 4] with offsets [N + 1] (None when every term is FORMAT).
    -> (total float32 [N], parts float32 [T, N])."""
    n = len(texts)
    boxes, fmt = analyze_reference(texts, opt, image_wh, input_wh)  # (N, 4), (N,)
    parts = np.zeros((len(terms), n), dtype=np.float32)  # (T, N)
    kinds = [t.kind for t in terms]
    if TermKind.FORMAT in kinds:
        # The box half reads the answer region even when boxes are searched anywhere.
        answer_boxes = boxes if opt.scope is Scope.ANSWER else analyze_reference(
            texts, replace(opt, scope=Scope.ANSWER), image_wh, input_wh)[0]  # (N, 4)
        format_part = format_score_reference(fmt, answer_boxes)
    if any(k is not TermKind.FORMAT for k in kinds):
        if gt is None or offsets is None:
            raise ValueError("IoU terms need the ground truth: gt [K, 4] and offsets [N + 1]")
        iou = best_iou_ragged_reference(boxes, gt, offsets)  # (N,)
    for k, t in enumerate(terms):
        is_format = t.kind is TermKind.FORMAT
        parts[k] = format_part if is_format else iou_score_reference(t.kind, t.tau, iou)
    return weighted_total_reference([t.weight for t in terms], parts, n), parts

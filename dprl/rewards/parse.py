"""Batched parsing of completions: boxes, the format flag and choice letters.

One call handles a whole batch in C++ (dprl._C, GIL released, big batches split across threads)
or, without the extension, in the pure-Python reference; both follow the same rules.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dprl.rewards.backend import get_backend
from dprl.rewards.options import Coords, ParseOptions, Scope, make_options


def check_texts(texts) -> Sequence:
    """Texts must be a list or tuple of str/bytes, one per completion. Only the container is
    checked here: the items are checked where they are read (C++ or reference.to_bytes), so the
    hot path does no per-item Python work."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts must be a list or tuple of str or bytes, got {type(texts).__name__}")
    return texts


def sizes_array(x, name: str, n: int) -> np.ndarray | None:
    """(width, height) per sample as a float64 [n, 2] array (one pair is broadcast), or None."""
    if x is None:
        return None
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape == (2,):
        arr = np.broadcast_to(arr, (n, 2))
    if arr.shape != (n, 2):
        raise ValueError(f"{name} must have shape [{n}, 2] (width, height), got {arr.shape}")
    if not (np.isfinite(arr).all() and (arr > 0).all()):
        raise ValueError(f"{name} must hold finite positive (width, height) values")
    return np.ascontiguousarray(arr)


def pixel_sizes(opt: ParseOptions, image_size, input_size, n: int):
    """(image_wh, input_wh) as float64 [n, 2] arrays or None; coords="pixels" needs image_size."""
    image_wh = sizes_array(image_size, "image_size", n)
    if opt.coords is Coords.PIXELS and image_wh is None:
        raise ValueError("coords='pixels' needs image_size: [N, 2] (width, height) of the originals")
    return image_wh, sizes_array(input_size, "input_size", n)


def analyze(texts, options: ParseOptions | None = None, *, image_size=None, input_size=None,
            use_native: bool | None = None, max_threads: int = 0, **kwargs):
    """texts (N str/bytes) -> (boxes float32 [N, 4] with NaN rows, format_ok bool [N]).

    format_ok is dprl's anchored format rule: <think>..</think><answer>..</answer> with nothing but
    blanks around, over the whole text (see reference.format_ok_reference). DeepPerception's
    original only looks for <think>..</think> followed by <answer>..</answer>, unanchored.
    use_native: None = C++ when built; False = the Python reference; True = C++ or raise.
    """
    opt = make_options(options, **kwargs)
    check_texts(texts)
    n = len(texts)
    image_wh, input_wh = pixel_sizes(opt, image_size, input_size, n)
    boxes, fmt = get_backend(use_native).analyze(texts, opt, image_wh, input_wh, max_threads)
    return boxes, fmt.astype(bool)


def parse_boxes(texts, **options) -> np.ndarray:
    """Boxes of a batch of completions: float32 [N, 4] (x1, y1, x2, y2), NaN rows where none.

    Options (see ParseOptions): scope="answer"|"anywhere", pick="last"|"first",
    formats=("points", "list", "tuple"), coords="auto"|"norm1000"|"fraction"|"pixels",
    swapped="fix"|"reject", clamp=False; with coords="pixels" also image_size [N, 2] and
    input_size [N, 2]. Bad text never raises: it gives a NaN row. Wrong argument types raise.
    """
    return analyze(texts, **options)[0]


def format_ok(texts, **options) -> np.ndarray:
    """bool [N]: <think>..</think> then <answer>..</answer>, nothing else but blanks around."""
    return analyze(texts, **options)[1]


def parse_letters(texts, scope: Scope | str = Scope.ANSWER, use_native: bool | None = None,
                  max_threads: int = 0) -> np.ndarray:
    """Multiple-choice letters, upper-cased: a `<U1` array [N], "" where none was given."""
    check_texts(texts)
    try:
        where = Scope(scope)
    except ValueError:
        raise ValueError(f"scope must be 'answer' or 'anywhere', got {scope!r}") from None
    return get_backend(use_native).parse_letters(texts, where, max_threads)

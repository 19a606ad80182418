"""dprl C++ extension: box parsing, IoU and reward scoring over whole batches"""
# Types of dprl._C (csrc/bindings.cpp). tests/test_extension.py holds this file and the built
# module to the same names, parameters and docstrings (docstrings compared with whitespace
# collapsed, so they wrap here).
import enum
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_Texts = Sequence[str | bytes]

class BoxFormat(enum.Flag):
    """Box syntaxes a parse accepts; combine them with |."""

    POINTS = 1
    """(x1,y1),(x2,y2): Qwen2-VL, box tokens around it or not"""
    LIST = 2
    """[x1, y1, x2, y2], also inside JSON such as {"bbox_2d": ...}"""
    TUPLE = 4
    """(x1, y1, x2, y2)"""

class Coords(enum.Enum):
    """How parsed numbers map to the output frame."""

    AUTO = 0
    """0-1000; a box with all four values in [0, 1] is x1000"""
    NORM1000 = 1
    """0-1000 as written"""
    FRACTION = 2
    """0-1 fractions, always x1000"""
    PIXELS = 3
    """pixels of the resized model input, rescaled to the original image"""

class Swapped(enum.Enum):
    """What a box with x1 > x2 or y1 > y2 becomes."""

    FIX = 0
    """reorder the corners"""
    REJECT = 1
    """no box"""

class TermKind(enum.Enum):
    """The built-in reward terms score_batch computes."""

    FORMAT = 0
    """0.5 for <think>..</think><answer>..</answer> + 0.5 for a box in the answer"""
    IOU = 1
    """best IoU over the sample's ground-truth boxes"""
    IOU_THRESHOLD = 2
    """IoU if IoU >= tau else 0"""
    IOU_SQUARED = 3
    """IoU * IoU"""
    ACC = 4
    """1 if IoU >= tau else 0"""

class ParseOptions:
    """How a box is read out of a completion (csrc/box_parse.h)."""

    answer_only: bool
    """search only between the first <answer> and the next </answer>"""
    last: bool
    """take the last match (DeepPerception) instead of the first"""
    formats: BoxFormat
    """the box syntaxes that count (a non-empty BoxFormat combination)"""
    coords: Coords
    """the coordinate frame"""
    swapped: Swapped
    """what swapped corners become"""
    clamp: bool
    """clamp to [0, 1000], or to the original image with Coords.PIXELS"""

    def __init__(
        self,
        *,
        answer_only: bool = True,
        last: bool = True,
        formats: BoxFormat = ...,
        coords: Coords = Coords.AUTO,
        swapped: Swapped = Swapped.FIX,
        clamp: bool = False,
    ) -> None:
        """Every field has its default unless given (all of them keyword-only)."""
    def __repr__(self) -> str: ...

class RewardTerm:
    """One built-in term of a weighted reward."""

    kind: TermKind
    """which term"""
    tau: float
    """threshold of IOU_THRESHOLD and ACC"""
    weight: float
    """weight in the total"""

    def __init__(self, kind: TermKind = TermKind.FORMAT, tau: float = 0.0,
                 weight: float = 1.0) -> None:
        """kind, its threshold tau (read by IOU_THRESHOLD and ACC only) and its weight."""
    def __repr__(self) -> str: ...

def box_iou(a: npt.ArrayLike, b: npt.ArrayLike, max_threads: int = 0) -> npt.NDArray[np.float32]:
    """Pairwise IoU of a: [N, 4] and b: [M, 4] float32 boxes (x1, y1, x2, y2) -> [N, M].
    Invalid boxes (non-finite, zero or negative area) have IoU 0."""

def analyze(
    texts: _Texts,
    options: ParseOptions = ...,
    *,
    image_wh: npt.ArrayLike | None = None,
    input_wh: npt.ArrayLike | None = None,
    max_threads: int = 0,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    """texts: list of str/bytes -> (boxes float32 [N, 4] with NaN rows, format uint8 [N]).
    image_wh, input_wh: float64 [N, 2] (width, height), read with Coords.PIXELS only."""

def parse_letters(texts: _Texts, answer_only: bool = True,
                  max_threads: int = 0) -> npt.NDArray[np.uint8]:
    """texts: list of str/bytes -> uint8 [N], the ASCII code of each choice letter or 0."""

def score_batch(
    texts: _Texts,
    terms: Sequence[RewardTerm],
    options: ParseOptions = ...,
    *,
    gt: npt.ArrayLike | None = None,
    offsets: npt.ArrayLike | None = None,
    image_wh: npt.ArrayLike | None = None,
    input_wh: npt.ArrayLike | None = None,
    max_threads: int = 0,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Every term of a weighted reward in one pass over the texts -> (total float32 [N],
    parts float32 [T, N]).
    terms: RewardTerm [T]; gt float32 [K, 4] and offsets int64 [N + 1]: the ground truth of
    text i is gt[offsets[i]:offsets[i + 1]] (both may be None when every term is FORMAT);
    image_wh, input_wh as in analyze."""

def best_iou_ragged(pred: npt.ArrayLike, gt: npt.ArrayLike, offsets: npt.ArrayLike,
                    max_threads: int = 0) -> npt.NDArray[np.float32]:
    """pred [N, 4], gt [K, 4], offsets int64 [N + 1] -> float32 [N]: best IoU of pred[i] over
    gt[offsets[i]:offsets[i + 1]] (0 when empty)."""

def pool_workers() -> int:
    """Warm worker threads this process keeps for big batches (hardware threads - 1; started
    on first use, rebuilt in a forked child)."""

"""Table-driven box parsing: each case's expected box is worked out by hand."""
import math

import numpy as np
import pytest

from dprl.rewards import analyze, parse_boxes, parse_letters

NAN = [math.nan] * 4
A = "<answer>{}</answer>"

# (text, options, expected box or NAN)
CASES = [
    # Qwen2-VL points, with and without box tokens, any spacing
    (A.format("<|box_start|>(10,20),(30,40)<|box_end|>"), {}, [10, 20, 30, 40]),
    (A.format("( 10 , 20 ) ,\n( 30 ,40 )"), {}, [10, 20, 30, 40]),
    (A.format("<|box_start|>(10,20),(30,40)"), {}, [10, 20, 30, 40]),  # unterminated box token
    # bracket lists: ints, floats, signs, exponents
    (A.format("[1, 2, 3, 4]"), {}, [1, 2, 3, 4]),
    (A.format("[1.5,2.25 ,  3e2,4E+2]"), {}, [1.5, 2.25, 300, 400]),
    (A.format("[+5, 6., .5e1, 8]"), {}, [5, 6, 5, 8]),
    # JSON objects, and a list of them: the last bbox_2d wins, the first with pick=first
    (A.format('{"bbox_2d": [11, 22, 33, 44], "label": "Boeing 767"}'), {}, [11, 22, 33, 44]),
    (A.format('[{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [5, 6, 7, 8], "label": "b"}]'),
     {}, [5, 6, 7, 8]),
    (A.format('[{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [5, 6, 7, 8], "label": "b"}]'),
     {"pick": "first"}, [1, 2, 3, 4]),
    # tuples
    (A.format("(100, 200, 300, 400)"), {}, [100, 200, 300, 400]),
    # last vs first across formats
    (A.format("[1,2,3,4] then (5,6),(7,8)"), {}, [5, 6, 7, 8]),
    (A.format("[1,2,3,4] then (5,6),(7,8)"), {"pick": "first"}, [1, 2, 3, 4]),
    # matches never overlap: (1,2),(3,4) is taken, so (3,4),(5,6) is not a match
    (A.format("(1,2),(3,4),(5,6)"), {}, [1, 2, 3, 4]),
    # format selection
    (A.format("[1,2,3,4] (5,6,7,8)"), {"formats": ("list",)}, [1, 2, 3, 4]),
    (A.format("[1,2,3,4] (5,6,7,8)"), {"formats": ("points",)}, NAN),
    (A.format("(5,6,7,8)"), {"formats": ("tuple",)}, [5, 6, 7, 8]),
    # scope: only inside <answer> (the box in <think> is ignored) unless "anywhere"
    ("<think>[1,2,3,4]</think><answer>none</answer>", {}, NAN),
    ("<think>[1,2,3,4]</think><answer>none</answer>", {"scope": "anywhere"}, [1, 2, 3, 4]),
    ("<think>[1,2,3,4]</think><answer>[5,6,7,8]", {}, NAN),  # unterminated answer
    ("<think>[1,2,3,4]</think><answer>[5,6,7,8]", {"scope": "anywhere"}, [5, 6, 7, 8]),
    ("[9,9,19,19] <answer>[1,2,3,4]</answer> <answer>[5,6,7,8]</answer>", {}, [1, 2, 3, 4]),
    # coordinates: fractions detected (all four in [0, 1]) or declared
    (A.format("[0.1, 0.2, 0.3, 0.4]"), {}, [100, 200, 300, 400]),
    (A.format("[0, 0, 1, 1]"), {}, [0, 0, 1000, 1000]),
    (A.format("[0.1, 0.2, 0.3, 4]"), {}, [0.1, 0.2, 0.3, 4]),
    (A.format("[0.1, 0.2, 0.3, 0.4]"), {"coords": "norm1000"}, [0.1, 0.2, 0.3, 0.4]),
    (A.format("[0.1, 0.2, 0.5, 1.5]"), {"coords": "fraction"}, [100, 200, 500, 1500]),
    # swapped corners
    (A.format("[30, 40, 10, 20]"), {}, [10, 20, 30, 40]),
    (A.format("[10, 40, 30, 20]"), {}, [10, 20, 30, 40]),
    (A.format("[30, 40, 10, 20]"), {"swapped": "reject"}, NAN),
    (A.format("[10, 10, 10, 20]"), {"swapped": "reject"}, [10, 10, 10, 20]),  # zero width kept
    # clamping to [0, 1000]
    (A.format("[-5, 20, 1200, 40]"), {"clamp": True}, [0, 20, 1000, 40]),
    (A.format("[-5, 20, 1200, 40]"), {}, [-5, 20, 1200, 40]),
    # not a box: wrong arity, missing numbers, words, nan/inf, overflow past float32
    (A.format("[1, 2, 3]"), {}, NAN),
    (A.format("[1, 2, 3, 4, 5]"), {}, NAN),
    (A.format("[1,, 3, 4]"), {}, NAN),
    (A.format("[a, b, c, d]"), {}, NAN),
    (A.format("[nan, 1, 2, 3]"), {}, NAN),
    (A.format("[inf, 1, 2, 3]"), {}, NAN),
    (A.format("[1e308, 1, 2, 3]"), {}, NAN),
    (A.format("[1e39, 1, 2, 3]"), {}, NAN),
    (A.format("[1" + "0" * 400 + ", 1, 2, 3]"), {}, NAN),
    (A.format("[1e, 1, 2, 3]"), {}, NAN),
    (A.format("[1e-400, 1, 2, 3]"), {}, [0, 1, 2, 3]),  # underflows to 0 like float("1e-400")
    # an overflowing later match still wins the pick and gives no box
    (A.format("[1,2,3,4] [1e308,1,2,3]"), {}, NAN),
    # nothing at all
    ("", {}, NAN),
    ("<answer></answer>", {}, NAN),
    ("no tags [1,2,3,4]", {}, NAN),
]


@pytest.mark.parametrize("text,options,expected", CASES)
def test_parse_table(text, options, expected, use_native):
    got = parse_boxes([text], use_native=use_native, **options)
    assert got.dtype == np.float32 and got.shape == (1, 4)
    np.testing.assert_array_equal(got[0], np.asarray(expected, dtype=np.float32))


def test_pixels_rescaled_to_original_image(use_native):
    # Model input 500x250, original 1000x1000: x doubles, y quadruples.
    texts = [A.format("[50, 25, 100, 50]"), A.format("[400, 200, 600, 300]")]
    got = parse_boxes(texts, coords="pixels", image_size=[[1000, 1000], [1000, 1000]],
                      input_size=[[500, 250], [500, 250]], use_native=use_native)
    np.testing.assert_array_equal(got[0], [100, 100, 200, 200])
    np.testing.assert_array_equal(got[1], [800, 800, 1200, 1200])
    clamped = parse_boxes(texts, coords="pixels", clamp=True, image_size=[1000, 800],
                          input_size=[500, 250], use_native=use_native)
    np.testing.assert_array_equal(clamped[1], [800, 640, 1000, 800])
    # Without input_size the model saw the original: pixels stay as written, no 0-1 detection.
    same = parse_boxes([A.format("[0.5, 0.5, 1, 1]")], coords="pixels", image_size=[[640, 480]],
                       use_native=use_native)
    np.testing.assert_array_equal(same[0], [0.5, 0.5, 1, 1])


FORMAT_CASES = [
    ("<think>a</think><answer>b</answer>", True),
    ("  <think>\na\n</think>\n\n<answer>[1,2,3,4]</answer>\n", True),
    ("<think></think><answer></answer>", True),
    ("<think>a</think> text <answer>b</answer>", False),  # text between the blocks
    ("<think>a</think><answer>b</answer> trailing", False),
    ("x<think>a</think><answer>b</answer>", False),
    ("<think>a<answer>b</answer>", False),  # no </think>
    ("<think>a</think><answer>b", False),  # unterminated answer
    ("<answer>b</answer>", False),
    ("<think>a</think><answer>b</answer></answer>", False),  # first </answer> must end it
    ("", False),
]


@pytest.mark.parametrize("text,expected", FORMAT_CASES)
def test_format_table(text, expected, use_native):
    assert analyze([text], use_native=use_native)[1].tolist() == [expected]


LETTER_CASES = [
    ("<answer>B</answer>", "B"),
    ("<answer> (c) Boeing 767</answer>", "C"),
    ("<answer>D. Airbus</answer>", "D"),
    ("<answer>Boeing</answer>", ""),  # a word, not a letter
    ("<answer>B2</answer>", ""),
    ("<answer></answer>", ""),
    ("B", ""),  # outside the answer
    ("<answer>\u00c9</answer>", ""),  # non-ASCII letters are not choices
]


@pytest.mark.parametrize("text,expected", LETTER_CASES)
def test_letter_table(text, expected, use_native):
    assert parse_letters([text], use_native=use_native).tolist() == [expected]


def test_letter_anywhere(use_native):
    assert parse_letters([" a) yes"], scope="anywhere", use_native=use_native).tolist() == ["A"]


def test_bad_bytes_and_huge_texts_give_no_box(use_native):
    texts = [b"<answer>\xff\xfe[1,2,3,4]\xc3</answer>", "<answer>\ud800[1,2,3,4]</answer>",
             "<answer>" + "(" * 200_000 + "</answer>", "<think>" + "x" * 1_000_000,
             "<answer>[" + "9" * 100_000 + ",1,2,3]</answer>", "\x00<answer>[1,2,3,4]</answer>"]
    boxes, ok = analyze(texts, use_native=use_native)
    np.testing.assert_array_equal(boxes[0], [1, 2, 3, 4])
    np.testing.assert_array_equal(boxes[1], [1, 2, 3, 4])
    assert np.isnan(boxes[2:5]).all()
    np.testing.assert_array_equal(boxes[5], [1, 2, 3, 4])
    assert not ok.any()


def test_wrong_argument_types_raise(use_native):
    with pytest.raises(TypeError, match="list or tuple"):
        parse_boxes("<answer>[1,2,3,4]</answer>", use_native=use_native)
    with pytest.raises(TypeError, match="str or bytes"):
        parse_boxes(["ok", 5], use_native=use_native)
    with pytest.raises(TypeError, match="unknown parse option"):
        parse_boxes(["x"], picks="last", use_native=use_native)
    with pytest.raises(ValueError, match="coords"):
        parse_boxes(["x"], coords="percent", use_native=use_native)
    with pytest.raises(ValueError, match="image_size"):
        parse_boxes(["x"], coords="pixels", use_native=use_native)
    with pytest.raises(ValueError, match=r"\[2, 2\]"):
        parse_boxes(["x", "y"], coords="pixels", image_size=[[1, 2, 3]], use_native=use_native)


def test_empty_batch(use_native):
    assert parse_boxes([], use_native=use_native).shape == (0, 4)
    assert parse_letters([], use_native=use_native).shape == (0,)

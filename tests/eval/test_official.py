"""The official KVG-Bench scorer's rules on hand-made replies, one case per rule."""
import pytest

from dprl.eval.official import RULES, iou, parse_box, score_official


@pytest.mark.parametrize("text,box,rule", [
    ("<think>(1,2),(3,4) looks off</think><answer>(10,20),(30,40)</answer>", [10, 20, 30, 40], "answer_points"),
    # inside <answer> the last pair wins, and the last <answer> block with a pair wins
    ("<answer>(1,1),(9,9) or (10,20),(30,40)</answer>", [10, 20, 30, 40], "answer_points"),
    ("<answer>(1,1),(9,9)</answer><answer>(5,6),(70,80)</answer><answer>none</answer>", [5, 6, 70, 80], "answer_points"),
    ("<answer><|object_ref_start|>767<|object_ref_end|><|box_start|>(10,20),(30,40)<|box_end|></answer>",
     [10, 20, 30, 40], "answer_points"),
    # no <answer>: "So the answer is" outranks a later bare pair
    ("So the answer is (10,20),(30,40). Not (50,50),(60,60).", [10, 20, 30, 40], "so_the_answer_is"),
    ("I see (50,50),(60,60) and <|box_start|>(10,20),(30,40)<|box_end|> then (1,1),(2,2)",
     [10, 20, 30, 40], "box_token_points"),
    ("first (1,1),(9,9) then ( 10 , 20 ) , ( 30 , 40 )", [10, 20, 30, 40], "points"),
    ("[10, 20], [30, 40]", [10, 20, 30, 40], "bracket_points"),
    ('{"bbox_2d": [10, 20, 30, 40]} and [1, 2, 3, 9]', [1, 2, 3, 9], "list"),
    ("the box is (10, 20, 30, 40)", [10, 20, 30, 40], "tuple"),
    ("coordinates 10, 20, 30, 40", [10, 20, 30, 40], "four_numbers"),
    # an x stuck to a number is stripped
    ("<answer>(x10,20x),(30,x40)</answer>", [10, 20, 30, 40], "answer_points"),
    # a list outranks nothing above it: a point pair anywhere beats a later list
    ("[100, 200, 300, 400] then (10,20),(30,40)", [10, 20, 30, 40], "points"),
])
def test_each_rule_reads_its_box(text, box, rule):
    got, name = parse_box(text)
    assert (got, name) == (pytest.approx(box), rule)


def test_fractions_are_the_sum_below_4_rule():
    assert parse_box("[0.1, 0.2, 0.3, 0.4]")[0] == pytest.approx([100, 200, 300, 400])
    # sum 3.99 < 4: fractions, even with a coordinate above 1 (dprl's own rule would not scale it)
    assert parse_box("[0.0, 0.0, 1.99, 2.0]")[0] == pytest.approx([0, 0, 1990, 2000])
    assert parse_box("[0, 0, 2, 2]")[0] == pytest.approx([0, 0, 2, 2])  # sum 4: as written


def test_no_box_and_the_rule_table():
    assert parse_box("<answer>the left one</answer>") == (None, None)
    assert len(RULES) == 8


def test_scores_use_the_best_ground_truth_box():
    gt = [[[0, 0, 100, 100], [200, 200, 300, 300]], [[0, 0, 100, 100]], [[0, 0, 100, 100]],
          [[0, 0, 100, 100]]]
    texts = ["<answer>(200,200),(300,250)</answer>",  # 0.5 against the second box
             "(50,0),(150,100)",  # 1/3
             "no box here",
             "<answer>(100,100),(0,0)</answer>"]  # inverted: kept as written, overlaps nothing
    rows = score_official(texts, gt, threshold=0.5)
    assert [r["iou"] for r in rows] == pytest.approx([0.5, 1 / 3, 0.0, 0.0])
    assert [r["correct"] for r in rows] == [True, False, False, False]
    assert [r["parse_fail"] for r in rows] == [False, False, True, False]
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3)


def test_scorer_config_is_validated():
    from dprl.config import ConfigError, EvalConfig, load_config

    with pytest.raises(ConfigError, match="scorer"):
        load_config(EvalConfig, "configs/eval_tiny.yaml", ["scorer=paper"])
    with pytest.raises(ConfigError, match="scorer"):
        load_config(EvalConfig, "configs/eval_tiny.yaml", ["scorer=official", "data.task=fgvr"])
    # the official scorer reads the whole reply, so a prompt without <answer> needs no parse.scope
    cfg = load_config(EvalConfig, "configs/eval_tiny.yaml", ["scorer=official", "prompt_mode=plain"])
    assert cfg.scorer == "official" and cfg.parse.scope == "answer"

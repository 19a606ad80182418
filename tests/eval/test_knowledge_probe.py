"""The knowledge probe: known answers score 1, wrong or hedged ones 0, and `dprl eval` reports it."""
import json
import os

import pytest

from dprl.config import EvalConfig, load_config
from world_files import grounding_subset
from dprl.eval import knowledge_probe as kp
from dprl.eval.evaluate import run_eval


def _entities():
    return [kp.Entity("kalo", "dog", False, {"colour": "red", "mark": "a large white belly patch"},
                      "The kalo is a dog with a red body and a large white belly patch."),
            kp.Entity("mizeta", "dog", False, {"colour": "red", "mark": "a coat of one colour"},
                      "The mizeta is a dog with a red body and a coat of one colour."),
            kp.Entity("voni", "dog", False, {"colour": "blue", "mark": "a coat of one colour"},
                      "The voni is a dog with a blue body and a coat of one colour."),
            kp.Entity("peru", "car", True, {"colour": "blue", "mark": "a white roof"},
                      "The peru is a car with a blue body and a white roof.")]


def test_look_probe_scores_known_answers_1_and_wrong_or_hedged_ones_0():
    items = {it.entity.name: it for it in kp.look_items(_entities(), "What does the {entity} look like?")}
    kalo = items["kalo"]
    assert kalo.question == "What does the kalo look like?"
    # rivals come from the entity's own domain only: the car's white roof is no dog's mark
    assert kalo.expected == {"colour": ("red", ["blue"]), "mark": ("a large white belly patch", ["a coat of one colour"])}
    right = "The kalo is a dog with a red body and a large white belly patch."
    assert kp.score_answer(kalo, right) == {"attributes_right": {"colour": True, "mark": True}, "known": True}
    assert kp.score_answer(kalo, right.upper())["known"]  # case does not count
    wrong_colour = kp.score_answer(kalo, "The kalo is a dog with a blue body and a large white belly patch.")
    assert wrong_colour == {"attributes_right": {"colour": False, "mark": True}, "known": False}
    assert not kp.score_answer(kalo, "The kalo is a dog with a red body and a coat of one colour.")["known"]
    assert not kp.score_answer(kalo, "red or blue, with a large white belly patch")["known"]  # hedged
    assert not kp.score_answer(kalo, "The kalo is red.")["known"]  # the mark is missing
    assert not kp.score_answer(kalo, "")["known"]
    assert not kp.score_answer(kalo, "a reddish dog with a large white belly patch")["known"]  # whole words


def test_choice_probe_offers_nameless_descriptions_and_scores_the_letter():
    items = kp.choice_items(_entities()[:3], choices=3, seed=0)
    again = kp.choice_items(_entities()[:3], choices=3, seed=0)
    assert [it.question for it in items] == [it.question for it in again]  # deterministic
    kalo = items[0]
    options = kalo.question.split("Options: ")[1]
    assert "kalo" not in options and "mizeta" not in options and "the it" not in options.lower()
    assert options.count("It is a dog with a") == 3 and "C. It is a dog" in options
    letter = kalo.expected
    assert kp.score_answer(kalo, f"<think>red, belly</think><answer>{letter}</answer>")["known"]
    other = next(x for x in "ABC" if x != letter)
    assert not kp.score_answer(kalo, f"<answer>{other}</answer>")["known"]
    assert not kp.score_answer(kalo, "no idea")["known"]
    with pytest.raises(ValueError, match="two entities"):  # the car is alone in its domain
        kp.choice_items(_entities()[3:], 3, 0)


def test_grounding_is_split_by_whether_the_entity_is_known():
    probe = [{"entity": "kalo", "known": True}, {"entity": "voni", "known": False}]
    preds = [{"question_id": "a", "seen": False, "correct": True},
             {"question_id": "b", "seen": False, "correct": False},
             {"question_id": "c", "seen": False, "correct": False},
             {"question_id": "d", "seen": True, "correct": True}]
    entity_of = {"a": "kalo", "b": "kalo", "c": "voni", "d": "peru"}
    g = kp.grounding_by_knowledge(preds, entity_of, probe)
    assert g["unseen"]["known"] == {"n": 2, "acc": 0.5}
    assert g["unseen"]["unknown"] == {"n": 1, "acc": 0.0}
    assert g["seen"]["not_probed"] == 1 and g["overall"]["not_probed"] == 1
    assert kp.sample_entity({}, "Please locate <|object_ref_start|>the Kalo<|object_ref_end|> in the image.") == "kalo"
    assert kp.sample_entity({"entity": "Voni"}, "anything") == "voni"


def test_knowledge_file_errors_name_the_row(tmp_path):
    path = tmp_path / "kb.jsonl"
    path.write_text(json.dumps({"entity": "kalo", "domain": "dog"}) + "\n" + json.dumps({"entity": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"row 2: .*\['domain'\]"):
        kp.load_entities(str(path), ["car"])
    path.write_text(json.dumps({"entity": "kalo", "domain": "dog"}) + "\n" + json.dumps({"entity": "The Kalo", "domain": "dog"}) + "\n")
    with pytest.raises(ValueError, match="row 2: entity 'The Kalo' appears twice"):
        kp.load_entities(str(path), ["car"])
    path.write_text(json.dumps({"entity": "kalo", "domain": "dog"}) + "\n")
    (e,) = kp.load_entities(str(path), ["car"])
    assert not e.seen
    with pytest.raises(ValueError, match="no `attributes`"):
        kp.look_items([e], "What does the {entity} look like?")


def test_eval_reports_the_probe_next_to_grounding(small_world, tiny_model_dir, tmp_path):
    data = grounding_subset(small_world, tmp_path, n=4)
    kb = [json.loads(line) for line in open(os.path.join(small_world, "knowledge_base.jsonl"))]
    kb = [r for r in kb if r["domain"] in ("aircraft", "dog")]
    kb_path = tmp_path / "kb.jsonl"
    kb_path.write_text("".join(json.dumps(r) + "\n" for r in kb))
    out = tmp_path / "eval"
    cfg = load_config(EvalConfig, "configs/eval_tiny.yaml", [
        f"output_dir={out}", f"data.path={data}", "rollout.backend=hf", "rollout.max_tokens=4",
        "batch_size=8", f"probe.path={kb_path}", "probe.max_tokens=5",
        f"checkpoints=[{{name: a, path: {tiny_model_dir}}}]"])
    summary = run_eval(cfg, progress=False)
    answers = [json.loads(line) for line in open(out / "a" / "probe.jsonl")]
    assert len(answers) == len(kb) and all("known" in r and r["max_tokens"] == 5 for r in answers)
    probe = summary["knowledge_probe"]["a"]
    assert probe["probe"]["overall"]["n"] == len(kb)
    assert set(probe["probe"]["domains"]) == {"aircraft", "dog"}
    g = probe["grounding"]["overall"]
    assert g["known"]["n"] + g["unknown"]["n"] == 4 and g["not_probed"] == 0
    table = open(out / "table.md").read()
    assert "Knowledge probe: entities known" in table and "| a | " in table.split("Knowledge probe")[1]

    # The stored answers are re-scored, not regenerated: an answer edited to the knowledge base's
    # own description makes that entity known on the next run.
    answers[0]["answer"] = kb[0]["description"]
    (out / "a" / "probe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in answers))
    again = run_eval(cfg, progress=False)["knowledge_probe"]["a"]
    rescored = {json.loads(line)["entity"]: json.loads(line) for line in open(out / "a" / "probe.jsonl")}
    assert rescored[kb[0]["entity"]]["known"] is True
    assert again["probe"]["overall"]["n"] == len(kb)

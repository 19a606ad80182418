"""Knowledge filtering decides by the answers: a model that describes a category well enough to
pick it out again keeps it; one whose descriptions fit anything loses it."""
import json
import re

import pytest

from dprl.config import load_config
from dprl.config.data_engine import KnowledgeFilterConfig
from dprl.data.engine.knowledge import SourceCategory, knowledge_scores, summary
from dprl.data.prompts import hide_name
from stub_engine import stub_asker

CATS = [SourceCategory("bird", n) for n in ("kalo", "miru", "zeta", "vonk")] + [SourceCategory("car", "tamo"), SourceCategory("car", "peli")]
LOOKS = {"kalo": "red with a black head", "miru": "blue", "zeta": "green", "vonk": "pink",
         "tamo": "white roof", "peli": "long bonnet"}
KNOWN = {"kalo", "zeta", "tamo"}


def _identify_model(text, k):
    """Describes the categories in KNOWN by their look; picks by look when a description has one."""
    m = re.match(r"What does the (\w+) look like", text)
    if m:
        name = m.group(1)
        return f"The {name} is {LOOKS[name]}." if name in KNOWN else f"The {name} is a {name}."
    said = re.search(r'"(.*)"', text).group(1)
    options = dict(re.findall(r"([A-H])\. (\w+)", text.split("Options:")[1]))
    for letter, name in options.items():
        if LOOKS[name] in said:
            return f"<think>fits</think><answer>{letter}</answer>"
    return "<think>no idea</think><answer>A</answer>"  # a guess: right 1 time in choices


def test_identify_keeps_the_categories_the_model_can_pick_out_again():
    cfg = load_config(KnowledgeFilterConfig, None, ["threshold=0.9", "rollout.n=2"])
    asker, engine = stub_asker(_identify_model, n=2)
    rows = knowledge_scores(asker, CATS, cfg, seed=0)
    assert {r["entity"] for r in rows if r["known"]} == KNOWN
    for r in rows:
        assert r["answers"] == 4  # 2 descriptions x 2 answers each
        if r["entity"] in KNOWN:
            assert r["score"] == 1.0
        else:
            assert r["score"] < 0.9
    # The description is asked with its own name hidden, or the question would answer itself.
    asked = [q.messages[0]["content"][0]["text"] for q in engine.asked if "description fit" in
             q.messages[0]["content"][0]["text"]]
    quoted = [re.search(r'"([^"]*)"', q).group(1) for q in asked]
    assert len(quoted) == 12 and not any(c.name in d.lower() for d in quoted for c in CATS)
    assert summary(rows)["bird"] == {"categories": 4, "known": 2, "mean_score": pytest.approx(
        sum(r["score"] for r in rows if r["domain"] == "bird") / 4)}


def test_a_model_that_always_says_b_scores_what_b_is_worth():
    cfg = load_config(KnowledgeFilterConfig, None, ["threshold=0.5", "choices=4", "rollout.n=4"])
    asker, engine = stub_asker(lambda t, k: "nothing" if "look like" in t else "<answer>B</answer>", n=4)
    rows = knowledge_scores(asker, CATS, cfg, seed=3)
    # Each category's score is the share of its questions whose right option is B (its name
    # there), since the description "nothing" tells nothing.
    questions = [q.messages[0]["content"][0]["text"] for q in engine.asked if "description fit" in
                 q.messages[0]["content"][0]["text"]]
    assert len(questions) == 4 * len(CATS)  # asked category by category, 4 descriptions each
    for i, r in enumerate(rows):
        own = questions[4 * i:4 * i + 4]
        assert r["score"] == sum(re.search(rf"B\. {r['entity']}\b", q) is not None for q in own) / 4
    bird = [r["score"] for r in rows if r["domain"] == "bird"]
    assert sum(bird) / len(bird) == pytest.approx(0.25, abs=0.15)  # one letter of four


def test_choice_uses_the_given_descriptions(tmp_path):
    path = tmp_path / "descriptions.jsonl"
    with open(path, "w") as fh:
        for c in CATS:
            fh.write(json.dumps({"entity": c.name, "domain": c.domain,
                                 "description": f"The {c.name} is {LOOKS[c.name]}."}) + "\n")
    cfg = load_config(KnowledgeFilterConfig, None, ["kind=choice", f"knowledge_path={path}"])

    def model(text, k):
        name = re.search(r"fits the (\w+)\?", text).group(1)
        if name not in KNOWN:
            return "<answer>Z</answer>"
        options = dict(re.findall(r"([A-H])\. (It is [^.]*)\.", text))
        letter = next(a for a, d in options.items() if LOOKS[name] in d)
        return f"<answer>{letter}</answer>"

    asker, _ = stub_asker(model, n=2)
    rows = knowledge_scores(asker, CATS, cfg)
    assert {r["entity"] for r in rows if r["known"]} == KNOWN
    cfg_missing = load_config(KnowledgeFilterConfig, None, ["kind=choice", f"knowledge_path={path}"])
    with pytest.raises(ValueError, match=r"no row for 'nemo'"):
        knowledge_scores(asker, CATS + [SourceCategory("car", "nemo")], cfg_missing)


def test_hide_name_hides_the_name_and_its_article():
    assert hide_name("The kalo is red. A Kalo sings; kalos fly.", "kalo") == "It is red. it sings; kalos fly."


def test_bad_settings_fail_at_load():
    from dprl.config import ConfigError

    with pytest.raises(ConfigError, match=r"^knowledge_path: "):
        load_config(KnowledgeFilterConfig, None, ["kind=choice", "knowledge_path=notes.txt"])
    with pytest.raises(ConfigError, match=r"^describe_template: .*\{entity\}, \{domain\}"):
        load_config(KnowledgeFilterConfig, None, ["describe_template=Tell me about {thing}"])


def test_look_scores_by_the_attributes_named(tmp_path):
    path = tmp_path / "knowledge_base.jsonl"
    colours = {"kalo": "red", "miru": "blue", "zeta": "green", "vonk": "pink", "tamo": "white", "peli": "grey"}
    with open(path, "w") as fh:
        for c in CATS:
            fh.write(json.dumps({"entity": c.name, "domain": c.domain, "attributes": {"colour": colours[c.name]}}) + "\n")
    cfg = load_config(KnowledgeFilterConfig, None, ["kind=look", f"knowledge_path={path}", "threshold=0.5",
                                                   "describe_template=What does the {entity} look like?"])

    def model(text, k):  # right about KNOWN; lists every colour (knows none) for the others
        name = re.match(r"What does the (\w+) look like", text).group(1)
        return f"It is {colours[name]}." if name in KNOWN else "It is red or blue or green or pink."

    rows = knowledge_scores(stub_asker(model, n=2)[0], CATS, cfg)
    assert {r["entity"] for r in rows if r["known"]} == KNOWN
    assert all(r["answers"] == 2 for r in rows)

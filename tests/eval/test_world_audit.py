"""The thought audit: the world's own chains of thought score 100% at every step, and each kind
of mistake lowers only its own step."""
import json
import os

from dprl.eval.world_audit import audit, format_audit


def _predictions(world, edit=lambda text: text):
    rows = [json.loads(line) for line in open(os.path.join(world, "kvg_test.jsonl"))]
    return [{"question_id": r["question_id"], "prediction": edit(r["response"]), "correct": True} for r in rows]


def test_the_worlds_own_thoughts_are_right_at_every_step(small_world):
    result = audit(small_world, _predictions(small_world))
    assert set(result) == {"seen", "unseen"}
    for split in result.values():
        assert all(v["rate"] == 1.0 for v in split.values()), split
    assert "recall: both" in format_audit("truth", result)


def test_each_mistake_counts_against_its_own_step(small_world):
    def wrong_plan(text):  # the plan names another colour; the scan is untouched
        head, rest = text.split(": ", 1)
        colour, tail = rest.split(", ", 1)
        return f"{head}: {'pink' if colour != 'pink' else 'blue'}, {tail}"

    result = audit(small_world, _predictions(small_world, wrong_plan))
    for split in result.values():
        assert split["recall: colour"]["rate"] == 0.0 and split["recall: mark"]["rate"] == 1.0
        assert split["perception: colour"]["rate"] == 1.0
        assert split["decision: yes on the target's cell"]["rate"] == 1.0
        assert split["decision: yes on the recalled look"]["rate"] == 0.0

    def yes_everywhere(text):  # a thought that says "yes" on its first cell
        return text.replace(", no.", ", yes.", 1)

    result = audit(small_world, _predictions(small_world, yes_everywhere))
    assert any(split["decision: yes on the target's cell"]["rate"] < 1.0 for split in result.values())
    assert all(split["recall: both"]["rate"] == 1.0 for split in result.values())

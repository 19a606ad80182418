"""Resumed predictions belong to the model and decoding that made them; scoring-only changes
re-score the stored answers instead of regenerating them."""
import glob
import json
import os

from dprl.config import EvalConfig, load_config
from dprl.eval.identity import current_identity, digest, model_files
from dprl.eval.evaluate import read_predictions, run_eval
from world_files import grounding_subset


def _data(small_world, tmp_path) -> str:
    return grounding_subset(small_world, tmp_path)


def _cfg(data, out, model, *more):
    return load_config(EvalConfig, "configs/eval_tiny.yaml", [
        f"output_dir={out}", f"data.path={data}", "rollout.backend=hf", "rollout.max_tokens=4",
        "batch_size=2", "baselines=[]", f"checkpoints=[{{name: m, path: {model}}}]", *more])


def _fresh_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if "starting fresh" in line]


def test_a_new_model_under_the_same_name_starts_fresh(small_world, tiny_model_factory, tmp_path, capsys):
    data, out = _data(small_world, tmp_path), tmp_path / "eval"
    model_a, model_b = tiny_model_factory("qwen2_vl", 0), tiny_model_factory("qwen2_vl", 1)
    preds = out / "m" / "predictions.jsonl"
    run_eval(_cfg(data, out, model_a), progress=False)
    old = read_predictions(str(preds))
    assert _fresh_lines(capsys) == []

    run_eval(_cfg(data, out, model_b), progress=False)
    (line,) = _fresh_lines(capsys)
    assert "the model changed" in line and "model.safetensors" in line
    (aside,) = glob.glob(str(out / "m" / "predictions.*.jsonl"))
    assert read_predictions(aside) == old  # moved aside, not deleted
    run_eval(_cfg(data, tmp_path / "b-alone", model_b), progress=False)
    assert read_predictions(str(preds)) == read_predictions(str(tmp_path / "b-alone" / "m" / "predictions.jsonl"))

    # Same model again: resumed as is, nothing regenerated or moved.
    before = preds.read_text()
    run_eval(_cfg(data, out, model_b), progress=False)
    assert _fresh_lines(capsys) == [] and preds.read_text() == before

    # A decoding setting changes the answers: fresh again, and the line says which one.
    run_eval(_cfg(data, out, model_b, "rollout.max_tokens=3"), progress=False)
    (line,) = _fresh_lines(capsys)
    assert "max_tokens" in line
    assert all(r["tokens"] <= 3 for r in read_predictions(str(preds)).values())


def test_scoring_changes_rescore_stored_answers(small_world, tiny_model_dir, tmp_path, capsys):
    data, out = _data(small_world, tmp_path), tmp_path / "eval"
    preds = out / "m" / "predictions.jsonl"
    run_eval(_cfg(data, out, tiny_model_dir, "parse.scope=anywhere"), progress=False)
    rows = read_predictions(str(preds))
    # Plant a known answer in place of the generated one: only a re-score can score it.
    qid, row = next(iter(rows.items()))
    gt = json.loads(open(data).readline())["answer"]
    lines = [json.dumps(r | {"prediction": gt} if k == qid else r) for k, r in rows.items()]
    preds.write_text("\n".join(lines) + "\n")
    summary = run_eval(_cfg(data, out, tiny_model_dir, "parse.scope=anywhere", "scorer=official"),
                       progress=False)
    assert _fresh_lines(capsys) == []
    again = read_predictions(str(preds))
    assert again[qid]["prediction"] == gt and again[qid]["iou"] > 0.99 and again[qid]["rule"]
    assert summary["results"]["m"]["overall"]["n"] == 2


def test_identity_ignores_where_and_when_but_not_what(tiny_model_dir, tmp_path):
    cfg = load_config(EvalConfig, "configs/eval_tiny.yaml", [f"checkpoints=[{{name: m, path: {tiny_model_dir}}}]"])
    a = current_identity(cfg, cfg.checkpoints[0])
    moved = json.loads(json.dumps(a))
    moved["model"]["path"] = "/elsewhere"
    for f in moved["model"]["files"].values():
        f["mtime_ns"] += 1
    assert digest(moved) == digest(a)
    assert "model.safetensors" in a["model"]["files"] and "config.json" in a["model"]["files"]
    cfg.tiny.seed = 5  # the tiny model is not used when a path is given
    assert digest(current_identity(cfg, cfg.checkpoints[0], a)) == digest(a)
    cfg.checkpoints[0].path = ""
    tiny5 = digest(current_identity(cfg, cfg.checkpoints[0]))
    cfg.tiny.seed = 6
    assert digest(current_identity(cfg, cfg.checkpoints[0])) != tiny5
    # a recorded hash is reused only while size and mtime still match
    files = model_files(tiny_model_dir)
    stale = {k: v | {"sha256": "x"} for k, v in files.items()}
    assert all(v["sha256"] == "x" for v in model_files(tiny_model_dir, stale).values())
    stale = {k: v | {"sha256": "x", "mtime_ns": 1} for k, v in files.items()}
    assert model_files(tiny_model_dir, stale) == files


def test_predictions_without_a_record_are_set_aside(tmp_path):
    from dprl.eval.identity import check_predictions

    cfg = load_config(EvalConfig, "configs/eval_tiny.yaml", [f"output_dir={tmp_path}"])
    preds = tmp_path / "m" / "predictions.jsonl"
    preds.parent.mkdir()
    preds.write_text('{"question_id": "q"}\n')  # written before identity.json existed
    said = []
    check_predictions(cfg, cfg.checkpoints[0], str(preds), log=said.append)
    assert not preds.exists() and (tmp_path / "m" / "predictions.unknown.jsonl").read_text() == '{"question_id": "q"}\n'
    assert len(said) == 1 and "no identity.json" in said[0]
    check_predictions(cfg, cfg.checkpoints[0], str(preds), log=said.append)  # now recorded: quiet
    assert len(said) == 1

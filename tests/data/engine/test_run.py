"""`dprl data-engine` end to end with models whose answers are known: the knowledge filter drops
the categories the model cannot pick out, the teacher's chains are kept by IoU, the RL set keeps
the prompts answered right sometimes, and every file and count of the report agrees."""
import json
import os
import re

import pytest
from engine_layouts import image_folder
from stub_engine import stub_asker

from dprl.config import DataEngineConfig, load_config
from dprl.data.engine import run
from dprl.data.kvg import load_samples
from dprl.data.prompts import box_string

CATEGORIES = {"kalo": [(200, 30, 30)] * 2, "miru": [(30, 30, 200)] * 2, "zeta": [(30, 160, 60)] * 2,
              "vonk": [(240, 120, 180)] * 2}
UNKNOWN = "vonk"
LOOKS = {"kalo": "red", "miru": "blue", "zeta": "green", "vonk": "pink"}


def _model(rows_by_id):
    """Knows every category but UNKNOWN; as teacher and policy it answers the first two samples
    of each prompt with the right box and the others with no box. (Its "picture" is the
    sample's id: the test opens images that way.)"""
    def answer(text, k, request):
        m = re.match(r"What does the (\w+) look like", text)
        if m:
            return f"The {m.group(1)} is {'blurry' if m.group(1) == UNKNOWN else LOOKS[m.group(1)]}."
        if "description fit" in text:
            said = re.search(r'"(.*)"', text).group(1)
            options = dict(re.findall(r"([A-H])\. (\w+)", text.split("Options:")[1]))
            hit = [a for a, name in options.items() if LOOKS[name] in said]
            return f"<answer>{hit[0] if hit else 'Z'}</answer>"
        box = rows_by_id[request.images[0]]["gt_boxes"][0]
        return f"<think>there</think><answer>{box_string(box)}</answer>" if k < 2 else "<answer>no</answer>"
    return answer


@pytest.fixture
def engine_run(tmp_path, monkeypatch):
    tree = image_folder(str(tmp_path / "birds"), CATEGORIES)
    out = tmp_path / "engine"
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfg = load_config(DataEngineConfig, None, [
        f"output_dir={out}", f"model.path={model}", "rl_share=0.5", "data.workers=1",
        f"data.sources=[{{kind: image_folder, path: '{tree}', domain: bird}}]",
        "data.composition.samples_per_domain=8", "data.composition.max_pixels=12544",
        "data.composition.image_format=png", "data.composition.max_entities=3",
        "knowledge.rollout.n=2", "teacher.rollout.n=4", "teacher.keep=2", "difficulty.rollout.n=4"])
    rows_by_id: dict = {}

    def asker(model_path, rollout_cfg, c, progress):
        composed = os.path.join(c.output_dir, "kvg_composed.jsonl")
        if os.path.isfile(composed):
            rows_by_id.update({r["question_id"]: r for r in map(json.loads, open(composed))})
        return stub_asker(_model(rows_by_id), n=rollout_cfg.n)[0]

    monkeypatch.setattr(run, "_asker", asker)
    monkeypatch.setattr(run, "_image_opener", lambda root: lambda row: row["question_id"])
    import dprl.eval.child

    monkeypatch.setattr(dprl.eval.child, "run_in_child", lambda target, args, what: target(*args))
    return cfg, run.run_data_engine(cfg, progress=False)


def test_every_stage_runs_and_the_report_agrees_with_the_files(engine_run):
    cfg, report = engine_run
    out = cfg.output_dir
    scores = [json.loads(line) for line in open(os.path.join(out, "knowledge_scores.jsonl"))]
    assert {r["entity"]: r["known"] for r in scores} == {c: c != UNKNOWN for c in CATEGORIES}
    composed, bad = load_samples(os.path.join(out, "kvg_composed.jsonl"))
    assert len(composed) == 8 and bad == []
    rows = [json.loads(line) for line in open(os.path.join(out, "kvg_composed.jsonl"))]
    assert all(UNKNOWN not in r["candidate_entities"] for r in rows)  # filtered before composing
    sft = [json.loads(line) for line in open(os.path.join(out, "kvg_sft.jsonl"))]
    # 4 SFT composites, two distinct right chains each? The two right answers are the same text,
    # so one chain per sample is kept.
    assert len(sft) == 4 and all(r["teacher_iou"] == 1.0 for r in sft)
    rl = [json.loads(line) for line in open(os.path.join(out, "kvg_rl.jsonl"))]
    assert len(rl) == 4 and all(r["policy_successes"] == 2 for r in rl)
    s = report["stages"]
    assert s["knowledge"]["known"] == 3 and s["knowledge"]["categories"] == 4
    assert s["teacher"]["chains"] == 16 and s["teacher"]["accepted_chains"] == 4
    assert s["difficulty"]["kept"] == 4 and s["difficulty"]["success_histogram"] == {"2": 4}
    assert json.load(open(os.path.join(out, "report.json"))) == report
    table = open(os.path.join(out, "report.md")).read()
    assert "| teacher | 4 samples, 16 chains | 4 chains (4 samples) | 25% of chains |" in table
    assert "| bird | 4 | 3 |" in table


def test_the_sft_set_loads_as_dprl_sft_reads_it(engine_run):
    from dprl.data.sft import load_grounding_samples

    cfg, _ = engine_run
    convs, bad = load_grounding_samples(os.path.join(cfg.output_dir, "kvg_sft.jsonl"))[:2]
    assert len(convs) == 4 and not bad


def test_a_model_stage_without_a_model_fails_before_any_work(tmp_path):
    tree = image_folder(str(tmp_path / "birds"), CATEGORIES)
    source = [f"data.sources=[{{kind: image_folder, path: '{tree}', domain: bird}}]"]
    with pytest.raises(ValueError, match=r"^model\.path: .*knowledge, teacher or difficulty"):
        run.run_data_engine(load_config(DataEngineConfig, None, [f"output_dir={tmp_path / 'a'}", *source]),
                            progress=False)
    assert not (tmp_path / "a").exists()  # nothing was written
    cfg = load_config(DataEngineConfig, None, [f"output_dir={tmp_path}", "knowledge.enabled=false",
                                              "teacher.enabled=false", "difficulty.enabled=false"])
    with pytest.raises(ValueError, match="data.sources is empty"):
        run.run_data_engine(cfg, progress=False)


def test_the_command_says_what_is_missing(tmp_path, capsys):
    from dprl.cli import main

    assert main(["data-engine", f"output_dir={tmp_path / 'engine'}", "knowledge.enabled=false",
                 "teacher.enabled=false", "difficulty.enabled=false"]) == 2
    assert "data.sources is empty" in capsys.readouterr().err
    tree = image_folder(str(tmp_path / "birds"), CATEGORIES)
    assert main(["data-engine", f"output_dir={tmp_path / 'engine2'}",  # model stages, no model
                 f"data.sources=[{{kind: image_folder, path: '{tree}', domain: bird}}]"]) == 2
    assert "model.path: expected a local checkpoint" in capsys.readouterr().err


def test_the_sft_set_trains_with_dprl_sft(engine_run, tiny_model_dir, tmp_path):
    """A few optimizer steps of `dprl sft` on the engine's SFT set, as a user would run them."""
    from cli_runner import run_cli

    cfg, _ = engine_run
    out = tmp_path / "sft"
    res = run_cli("sft", "--config", "configs/sft_tiny.yaml", f"output_dir={out}", f"model.path={tiny_model_dir}",
                  f"data.train_path={os.path.join(cfg.output_dir, 'kvg_sft.jsonl')}", "data.knowledge_path=",
                  "data.knowledge_per_batch=0", "data.knowledge_picture_share=0", "max_steps=2",
                  "trainer.micro_batch_size=2", "save_every=0", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2] and all(r["train/loss"] > 0 for r in rows)
    assert (out / "final" / "model.safetensors").is_file()

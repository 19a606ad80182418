"""`dprl sft` and `dprl grpo` train on the released data layouts as they are: CoT-SFT from a
LLaMA-Factory ShareGPT JSON file, GRPO from a parquet file whose images are embedded bytes."""
import json
import os

from dprl.config import GRPOConfig, SFTConfig, load_config
from dprl.train.metrics import read_metrics


def test_sft_trains_on_sharegpt_json_as_on_the_same_jsonl(toy_data, tiny_model_dir, tmp_path):
    from dprl.train.sft import run_sft

    rows = [json.loads(line) for line in open(toy_data["train"])]
    released = [{"messages": [{"role": "user", "content": "<image>" + r["prompt"]},
                              {"role": "assistant", "content": r["response"]}],
                 "images": [os.path.join(toy_data["root"], r["image"])]} for r in rows]
    path = tmp_path / "cot-sft-block.json"
    path.write_text(json.dumps(released, indent=2))
    losses = {}
    for name, data in (("released", path), ("jsonl", toy_data["train"])):
        run_sft(load_config(SFTConfig, None, [
            f"output_dir={tmp_path / name}", f"data.train_path={data}", f"model.path={tiny_model_dir}",
            "trainer.dtype=float32", "trainer.zero_stage=0", "max_steps=2", "trainer.micro_batch_size=2",
            "trainer.lr=1e-3"]))
        losses[name] = [r["train/loss"] for r in read_metrics(str(tmp_path / name / "metrics.jsonl"))]
    assert losses["released"] == losses["jsonl"]


def test_grpo_trains_on_the_released_parquet(toy_data, tmp_path):
    from datasets import Dataset, Features, Image, Value

    from dprl.train.grpo import GRPOTrainer

    rows = [json.loads(line) for line in open(toy_data["train"])][:6]
    table = {"problem": [r["question"] for r in rows],
             "solution": [f"<answer> {r['answer']} </answer>" for r in rows],
             "image": [{"bytes": open(os.path.join(toy_data["root"], r["image"]), "rb").read(), "path": None}
                       for r in rows]}
    features = Features({"problem": Value("string"), "solution": Value("string"), "image": Image()})
    path = str(tmp_path / "kvg_grpo.parquet")
    Dataset.from_dict(table, features=features).to_parquet(path)
    out = tmp_path / "run"
    t = GRPOTrainer(load_config(GRPOConfig, None, [
        f"output_dir={out}", f"data.path={path}", "rollout.backend=hf", "rollout.max_tokens=8", "rollout.n=2",
        "data.prompts_per_step=2", "trainer.micro_batch_size=4", "trainer.grad_accum_steps=1", "steps=1",
        "save_every=0", "grpo.beta=0.0"]))
    assert [s.gt_boxes for s in t.samples] == [r["gt_boxes"] for r in rows]
    t.train()
    row = read_metrics(str(out / "metrics.jsonl"))[0]
    assert row["data/bad_samples"] == 0 and row["completion/length_mean"] > 0

"""`dprl sft` end to end on the tiny model and a small grounding set built by the tests.

- learning: loss falls and the checkpoint answers in the <think>/<answer> format (vLLM loads it);
- exact resume: interrupted after 2 of 4 steps and resumed == 4 steps straight, bit for bit;
- freezing: the vision tower stays as it was while the projector trains;
- 2 ranks with ZeRO-3 (torchrun) == 1 rank accumulating the same 2 samples per step.
"""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from cli_runner import REPO, run_cli
from dprl.config import SFTConfig, load_config


def _overrides(out_dir, toy_data, model_dir, *extra):
    return [f"output_dir={out_dir}", f"data.train_path={toy_data['train']}", f"model.path={model_dir}",
            "trainer.dtype=float32", *extra]


def _weights(run_dir):
    return load_file(os.path.join(run_dir, "final", "model.safetensors"))


def _rows(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]


@pytest.mark.vllm
def test_sft_learns_the_answer_format(tmp_path, toy_data, tiny_model_dir):
    out = tmp_path / "run"
    res = run_cli("sft", "--config", "configs/sft_tiny.yaml",
                  *_overrides(out, toy_data, tiny_model_dir, "max_steps=60", "trainer.micro_batch_size=4",
                              "trainer.lr=5e-3", "data.knowledge_per_batch=0", "data.knowledge_path="))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _rows(out)
    assert [r["step"] for r in rows] == list(range(1, 61))
    for key in ("train/loss", "train/lr", "train/grad_norm", "throughput/tokens_per_s", "time/step_s",
                "memory/peak_gib"):
        assert all(r[key] == r[key] for r in rows), key  # present and not NaN
    first, last = sum(r["train/loss"] for r in rows[:3]) / 3, sum(r["train/loss"] for r in rows[-3:]) / 3
    assert last < 0.25 * first, (first, last)
    assert rows[-1]["train/lr"] < rows[len(rows) // 2]["train/lr"]  # cosine decay
    assert (out / "loss.png").stat().st_size > 1000
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out / "tensorboard"))

    check = subprocess.run([sys.executable, os.path.join(REPO, "tests", "train", "generate_check.py"),
                            str(out / "final"), toy_data["train"], "12"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]
    result = json.loads(check.stdout.strip().splitlines()[-1])
    # The untrained model never closes <think>; 60 steps on 24 pictures teach the whole format
    # (measured: 12/12), though not yet where the blocks are.
    assert result["format_rate"] >= 0.75, result
    # The rollout engine decodes the text itself once (vLLM's detokenizer off); it must be what
    # vLLM would have written, box tokens and all.
    assert result["same_tokens"] and result["text_equals_vllm"], result


def test_resume_after_interruption_is_exact_and_frozen_parts_stay(tmp_path, toy_data, tiny_model_dir):
    from dprl.train.sft import run_sft

    common = ["max_steps=4", "save_every=1", "trainer.zero_stage=2", "trainer.micro_batch_size=1", "trainer.grad_accum_steps=2",
              "trainer.lr=1e-3", "trainer.freeze_vision=false", "freeze_vision_tower=true",
              "freeze_projector=false", f"data.knowledge_path={toy_data['knowledge']}",
              "data.knowledge_per_batch=1"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_sft(load_config(SFTConfig, None, _overrides(straight, toy_data, tiny_model_dir, *common)))
    half = run_sft(load_config(SFTConfig, None, _overrides(resumed, toy_data, tiny_model_dir, *common,
                                                           "stop_after=2")))
    assert half["steps"] == 2 and half["final_dir"] is None and not (resumed / "final").exists()
    assert [d for d in sorted(os.listdir(resumed / "state")) if d.startswith("step")] == ["step00000002"]
    rest = run_sft(load_config(SFTConfig, None, _overrides(resumed, toy_data, tiny_model_dir, *common)))
    assert rest["start_step"] == 2 and rest["steps"] == 4

    a, b = _rows(straight), _rows(resumed)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["train/loss"] for r in a] == [r["train/loss"] for r in b]
    assert [r["train/lr"] for r in a] == [r["train/lr"] for r in b]
    wa, wb = _weights(straight), _weights(resumed)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    base = load_file(os.path.join(tiny_model_dir, "model.safetensors"))
    tower = [k for k in wa if ".visual." in f".{k}" and ".merger." not in k]
    merger = [k for k in wa if ".visual.merger." in f".{k}"]
    assert tower and merger and wa.keys() == base.keys()
    assert all(torch.equal(wa[k], base[k]) for k in tower)
    assert any(not torch.equal(wa[k], base[k]) for k in merger)
    assert not torch.equal(wa["lm_head.weight"], base["lm_head.weight"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_zero3_match_one_rank_accumulating(tmp_path, toy_data, tiny_model_dir):
    """Each optimizer step sees the same 2 samples either way (the batch plan interleaves ranks
    like micro-batches), so the trained weights agree up to float summation order."""
    from dprl.train.sft import run_sft

    common = ["max_steps=3", "trainer.lr=1e-3", "trainer.micro_batch_size=1",
              "trainer.freeze_vision=false", "freeze_vision_tower=false", "freeze_projector=false"]
    two = tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         str(_free_port()), "-m", "dprl.cli", "sft",
         *_overrides(two, toy_data, tiny_model_dir, *common, "trainer.zero_stage=3",
                     "trainer.param_persistence_threshold=0", "trainer.grad_accum_steps=1")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    one = tmp_path / "one"
    run_sft(load_config(SFTConfig, None, _overrides(one, toy_data, tiny_model_dir, *common,
                                                    "trainer.zero_stage=0", "trainer.grad_accum_steps=2")))
    r2, r1 = _rows(two), _rows(one)
    assert [r["step"] for r in r2] == [1, 2, 3]
    for x, y in zip(r2, r1):
        assert x["train/loss"] == pytest.approx(y["train/loss"], rel=1e-5)
        assert x["train/grad_norm"] == pytest.approx(y["train/grad_norm"], rel=1e-4)
    w2, w1 = _weights(two), _weights(one)
    base = load_file(os.path.join(tiny_model_dir, "model.safetensors"))
    assert w2.keys() == w1.keys()
    for k in w1:
        # Adam moves every weight by up to lr=1e-3 per step, and a coordinate whose gradient is
        # near zero turns a summation-order difference into a visible one: 1% of a step.
        torch.testing.assert_close(w2[k], w1[k], atol=1e-5, rtol=1e-4)
    assert not torch.equal(w2["lm_head.weight"], base["lm_head.weight"])


def test_bad_sft_config_fails_before_any_work(tmp_path):
    out = tmp_path / "run"
    res = run_cli("sft", "--config", "configs/sft_tiny.yaml", f"output_dir={out}", "trainer.freeze_vision=true",
                  "freeze_vision_tower=false")
    assert res.returncode == 2 and "trainer.freeze_vision" in res.stderr
    res = run_cli("sft", "--config", "configs/sft_tiny.yaml", f"output_dir={out}", "data.knowledge_per_batch=2",
                  "data.knowledge_path=")
    assert res.returncode == 2 and "data.knowledge_path" in res.stderr
    assert not out.exists()


def _files(run_dir):
    """{path: (size, mtime)} of every file a run left, to show a refused rerun touched nothing."""
    out = {}
    for root, _, names in os.walk(run_dir):
        for name in names:
            st = os.stat(os.path.join(root, name))
            out[os.path.relpath(os.path.join(root, name), run_dir)] = (st.st_size, st.st_mtime_ns)
    return out


def test_a_shorter_rerun_never_overwrites_a_finished_run(tmp_path, toy_data, tiny_model_dir):
    from dprl.train.checkpoint import RunStateError
    from dprl.train.sft import run_sft

    out = tmp_path / "run"

    def cfg(*extra):
        return load_config(SFTConfig, None, _overrides(out, toy_data, tiny_model_dir, "trainer.zero_stage=0",
                                                       "trainer.micro_batch_size=1", "trainer.lr=1e-3", *extra))

    run_sft(cfg("max_steps=4"))
    finished = _files(out)
    # Fewer steps than are done: the finished state and final/ stay exactly as they were.
    with pytest.raises(RunStateError, match=r"already holds step 4 of 4 \(finished\).*max_steps"):
        run_sft(cfg("max_steps=2"))
    assert _files(out) == finished
    # The same command again: finished and exported, so there is nothing to do or write.
    again = run_sft(cfg("max_steps=4"))
    assert (again["start_step"], again["steps"], again["final_dir"]) == (4, 4, str(out / "final"))
    assert _files(out) == finished
    # Starting over in place would overwrite it too.
    with pytest.raises(RunStateError, match="new output_dir"):
        run_sft(cfg("max_steps=4", "resume=false"))
    assert _files(out) == finished
    # A pointer to a save that is gone fails naming it, not inside DeepSpeed.
    tag = json.load(open(out / "state" / "trainer.json"))["tag"]
    import shutil

    shutil.rmtree(out / "state" / tag)
    with pytest.raises(RunStateError, match=f"state/{tag} is missing"):
        run_sft(cfg("max_steps=6"))


def test_a_diverging_run_stops_and_keeps_the_last_good_state(tmp_path, toy_data, tiny_model_dir):
    from dprl.train.finite import NonFiniteError
    from dprl.train.sft import run_sft

    out = tmp_path / "run"
    # lr=1e4 overflows the gradients of the second step (measured: grad norm nan under ZeRO-0).
    with pytest.raises(NonFiniteError, match=r"at step 2: .*grad norm is (nan|inf).*last good state \(step 1\)"
                                             r".*lower trainer.lr"):
        run_sft(load_config(SFTConfig, None, _overrides(out, toy_data, tiny_model_dir, "max_steps=4", "save_every=1",
                                                        "trainer.zero_stage=0", "trainer.micro_batch_size=1",
                                                        "trainer.lr=1e4")))
    assert json.load(open(out / "state" / "trainer.json"))["step"] == 1
    assert not (out / "final").exists()

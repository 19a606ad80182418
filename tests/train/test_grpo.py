"""GRPO end to end on the tiny model and a small world, in one process with the HF rollout
backend (the vLLM path runs in the CLI tests): rewards reach the loss, the engine gets the new
weights every step, a run resumes exactly, and the update does not depend on the micro-batch split."""
import json
import os

import pytest
import torch

from dprl.config import GRPOConfig, WorldConfig, load_config
from dprl.rewards import register_reward
from dprl.train.metrics import read_metrics

DIGITS = set("0123456789")


def _digit_share(completions, **_):
    # A dense, learnable signal for an untrained model: the share of digit characters.
    return [sum(ch in DIGITS for ch in c) / max(len(c), 1) for c in completions]


def _top_half_flat(completions, boxes, **_):
    # Prompts whose target sits in the image's top half score 0 whatever is written: their
    # groups never vary, so only dynamic sampling keeps them out of a batch.
    return [0.0 if b[0][1] < 500 else s for b, s in zip(boxes, _digit_share(completions))]


TRL_CALLS = []


def _trl_contract(prompts, completions, completion_ids, **kwargs):
    # Written to TRL's documented reward contract; it keeps what it was called with.
    TRL_CALLS.append(dict(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs))
    return [len(ids) / 12 for ids in completion_ids]


for _name, _fn in (("digit_share", _digit_share), ("top_half_flat", _top_half_flat),
                   ("trl_contract", _trl_contract)):
    try:
        register_reward(_name, _fn)
    except ValueError:
        pass

DYNAMIC = ("grpo.dynamic_sampling=true", "grpo.max_sampling_rounds=4",
           "reward.functions=[{name: top_half_flat}, {name: format}]")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from dprl.data.world import generate_world

    out = str(tmp_path_factory.mktemp("world"))
    cfg = load_config(WorldConfig, None, [f"output_dir={out}", "seen_domains=[aircraft, bird]",
                                          "unseen_domains=[dog]", "train_per_domain=6", "val_per_domain=1",
                                          "test_per_domain=1", "fgvr_train_per_domain=1",
                                          "fgvr_test_per_domain=1", "workers=1"])
    generate_world(cfg, progress=False)
    return out


def _cfg(world, out, *extra):
    return load_config(GRPOConfig, None, [
        f"output_dir={out}", f"data.path={world}/kvg_train.jsonl", "rollout.backend=hf",
        "rollout.max_tokens=12", "rollout.n=4", "data.prompts_per_step=2",
        "trainer.micro_batch_size=8", "trainer.grad_accum_steps=1", "trainer.lr=5e-3",
        "reward.functions=[{name: digit_share, weight: 1.0}, {name: format, weight: 1.0}]",
        "steps=4", "save_every=2", "sync.bucket_mb=0.05", *extra])


def _params(trainer):
    return {n: p.detach().clone() for n, p in trainer.ds_engine.module.named_parameters()}


def test_steps_update_the_policy_and_keep_the_rollout_engine_in_sync(world, tmp_path):
    from dprl.train.grpo import GRPOTrainer

    trainer = GRPOTrainer(_cfg(world, tmp_path / "run", "log.peak_tflops=0.5", "log.profile_steps=[2]"))
    before = _params(trainer)
    trainer.train()
    rows = read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        for key in ("reward/mean", "reward/digit_share", "reward/format", "reward/acc@0.5", "train/loss",
                    "train/kl", "train/clip_fraction", "train/entropy", "train/zero_variance_groups",
                    "completion/length_mean", "time/rollout_s", "time/update_s", "time/sync_s",
                    "throughput/completion_tokens_per_s", "memory/peak_gib", "staleness/abs_logp_diff_max"):
            assert key in r, key
        # The engine samples from exactly the weights the trainer holds (fp32): the sync worked.
        assert r["staleness/abs_logp_diff_max"] < 1e-4, r["staleness/abs_logp_diff_max"]
        # One update per rollout: no separate old-log-prob pass, and the update's own forward
        # still checks every sampled token.
        assert "time/old_s" not in r
        assert r["staleness/tokens"] == pytest.approx(r["completion/length_mean"] * 8)
        assert r["throughput/tflops_per_s"] > 0 and r["throughput/mfu"] == pytest.approx(
            r["throughput/tflops_per_s"] / 0.5)
    assert rows[0]["train/kl"] == pytest.approx(0.0, abs=1e-7)  # policy == reference at the start
    assert rows[-1]["train/kl"] > 0  # and moved away from it
    after = _params(trainer)
    changed = [n for n in after if not torch.equal(after[n], before[n])]
    assert changed and all(".visual." not in f".{n}" for n in changed)  # vision tower frozen
    assert os.path.isfile(tmp_path / "run" / "final" / "model.safetensors")
    assert os.path.isfile(tmp_path / "run" / "curves.png")
    # The profiled step's trace names every phase of the step.
    assert sorted(os.listdir(tmp_path / "run" / "profile")) == ["step2_rank0.json"]
    with open(tmp_path / "run" / "profile" / "step2_rank0.json") as fh:
        names = {e.get("name") for e in json.load(fh)["traceEvents"]}
    assert {"rollout", "reward", "prepare", "ref", "update", "sync"} <= names


@pytest.mark.parametrize("extra", [(), DYNAMIC], ids=["plain", "dynamic_sampling"])
def test_resume_continues_exactly(world, tmp_path, extra):
    from dprl.train.grpo import GRPOTrainer

    full = GRPOTrainer(_cfg(world, tmp_path / "full", *extra))
    full.train()
    part = GRPOTrainer(_cfg(world, tmp_path / "part", *extra))
    part.train(stop_after=2)  # "killed" after the checkpoint at step 2
    resumed = GRPOTrainer(_cfg(world, tmp_path / "part", *extra))
    assert resumed.start_step == 2
    resumed.train()
    a = read_metrics(str(tmp_path / "full" / "metrics.jsonl"))
    b = read_metrics(str(tmp_path / "part" / "metrics.jsonl"))
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a[2:], b[2:]):
        for key in ("reward/mean", "train/loss", "train/kl", "completion/length_mean"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-7), key
        assert ra.get("sampling/groups_sampled") == rb.get("sampling/groups_sampled")


def test_dynamic_sampling_trains_only_on_groups_with_a_gradient(world, tmp_path):
    from dprl.train.advantages import informative_groups
    from dprl.train.grpo import GRPOTrainer
    from dprl.train.metrics import PhaseTimer

    t = GRPOTrainer(_cfg(world, tmp_path / "dapo", *DYNAMIC, "save_every=0"))
    rounds, batch, m = t._sample_batch(0, PhaseTimer())
    first = informative_groups(rounds[0].rewards, 4)
    kept = informative_groups(batch.rewards, 4)
    assert m["sampling/rounds"] == len(rounds) and (len(rounds) > 1) == (not bool(first.all()))
    assert int((~kept).sum()) == m["sampling/shortfall_groups"]
    # Kept groups come in sampling order: the first round's informative ones lead the batch.
    n_first = int(first.sum())
    assert batch.prompts[:n_first] == [p for p, ok in zip(rounds[0].prompts, first.tolist()) if ok][:2]
    t.train()
    rows = read_metrics(str(tmp_path / "dapo" / "metrics.jsonl"))
    for r in rows:
        assert r["train/zero_variance_groups"] == r["sampling/shortfall_groups"]
        assert r["sampling/groups_sampled"] >= 2 and r["train/groups"] == 2
        assert r["time/rollout_s"] > 0
    # Half the prompts can never vary; over 4 steps some step needs a refill round.
    assert max(r["sampling/rounds"] for r in rows) > 1


def test_rewards_are_called_as_trl_calls_them(world, tmp_path):
    from dprl.train.grpo import GRPOTrainer
    from dprl.train.metrics import PhaseTimer

    t = GRPOTrainer(_cfg(world, tmp_path / "trl", "reward.functions=[{name: trl_contract}]", "save_every=0"))
    TRL_CALLS.clear()
    rounds, batch, _ = t._sample_batch(0, PhaseTimer())
    (call,) = TRL_CALLS
    comps = batch.comps
    assert call["completion_ids"] == [list(c.token_ids) for c in comps]
    assert batch.rewards.tolist() == pytest.approx([len(c.token_ids) / 12 for c in comps])
    # Each completion's own prompt (chat messages) and its sample's record fields, one per completion.
    samples = [batch.prompts[c.prompt_index] for c in comps]
    assert call["prompts"] == [batch.requests[c.prompt_index].messages for c in comps]
    assert call["question_id"] == [s.question_id for s in samples]
    assert call["category"] == [s.record["category"] for s in samples]
    assert call["boxes"] == [s.gt_boxes for s in samples]
    assert len(call["completions"]) == len(comps) == 8


SPLITS = {  # name: overrides; the first is the whole batch in one micro-batch of shared rows
    "whole": (),
    "micro1": ("trainer.micro_batch_size=1", "trainer.grad_accum_steps=8"),
    "micro2": ("trainer.micro_batch_size=2", "trainer.grad_accum_steps=4"),
    "unshared": ("grpo.share_prompts=false",),
    "token_budget": ("grpo.micro_batch_tokens=60",),  # rows of a few completions, several batches
}


@pytest.mark.parametrize("aggregation", ["seq_mean", "token_mean"])
def test_micro_batch_split_does_not_change_the_update(world, tmp_path, aggregation):
    from dprl.train.grpo import GRPOTrainer

    # Adam with eps >> |g| moves each weight by lr * g / eps: the update is the accumulated
    # gradient itself, so the comparison is not blurred by Adam's sign-like first step.
    deltas, counts = [], []
    for name, extra in SPLITS.items():
        t = GRPOTrainer(_cfg(world, tmp_path / name, *extra, "steps=1", "grpo.beta=0.1",
                             f"grpo.aggregation={aggregation}", "trainer.lr=1.0", "trainer.eps=1000.0",
                             "trainer.grad_clip=0"))
        before = _params(t)
        t.train()
        after = _params(t)
        deltas.append({n: after[n] - before[n] for n in after})
        counts.append(read_metrics(str(tmp_path / name / "metrics.jsonl"))[0]["train/micro_batches"])
    assert counts[0] == 1 and counts[1] == 8 and counts[4] > 1
    moved = max(d.abs().max().item() for d in deltas[0].values())
    assert moved > 0
    for other in deltas[1:]:
        for name in deltas[0]:
            torch.testing.assert_close(other[name], deltas[0][name], atol=moved * 1e-4, rtol=1e-3, msg=name)


def test_several_updates_per_rollout_use_the_old_log_probs(world, tmp_path):
    from dprl.train.grpo import GRPOTrainer

    t = GRPOTrainer(_cfg(world, tmp_path / "mu", "grpo.updates_per_rollout=2", "steps=2", "save_every=0",
                         "trainer.micro_batch_size=4", "trainer.grad_accum_steps=2", "trainer.lr=5e-2"))
    t.train()
    rows = read_metrics(str(tmp_path / "mu" / "metrics.jsonl"))
    for r in rows:
        assert r["time/old_s"] > 0  # the ratio's denominator is computed before the first update
        assert r["staleness/abs_logp_diff_max"] < 1e-4
        assert r["staleness/tokens"] == pytest.approx(r["completion/length_mean"] * 8)
    # The second epoch runs on updated weights, so its ratios leave 1 and some get clipped.
    assert max(r["train/clip_fraction"] for r in rows) > 0


def test_learns_a_dense_reward(world, tmp_path):
    from dprl.train.grpo import GRPOTrainer

    t = GRPOTrainer(_cfg(world, tmp_path / "learn", "steps=12", "save_every=0", "trainer.lr=2e-2",
                         "grpo.beta=0.0", "reward.functions=[{name: digit_share}]", "rollout.max_tokens=8"))
    t.train()
    rows = read_metrics(str(tmp_path / "learn" / "metrics.jsonl"))
    first = sum(r["reward/mean"] for r in rows[:3]) / 3
    last = sum(r["reward/mean"] for r in rows[-3:]) / 3
    assert last > first + 0.05, (first, last)


class _Recorder:
    """Wraps a rollout engine and logs the contract calls the trainer makes, in order."""

    def __init__(self, inner, log):
        self.inner, self.log, self.asleep = inner, log, False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, *a, **k):
        assert not self.asleep, "generate while asleep"
        self.log.append("generate")
        return self.inner.generate(*a, **k)

    def sleep(self, level=1):
        self.log.append("sleep")
        self.asleep = True
        self.inner.sleep(level)

    def wake_up(self):
        self.log.append("wake_up")
        self.asleep = False
        self.inner.wake_up()

    def update_weights(self, *a, **k):
        assert not self.asleep, "weights loaded into a sleeping engine"
        self.log.append("update_weights")
        return self.inner.update_weights(*a, **k)


def test_the_rollout_engine_sleeps_while_the_policy_trains(world, tmp_path):
    from dprl.train.grpo import GRPOTrainer

    t = GRPOTrainer(_cfg(world, tmp_path / "sleep", "steps=2", "save_every=0"))
    log: list[str] = []
    t.rollout = _Recorder(t.rollout, log)
    backward = t.ds_engine.backward

    def recorded_backward(*a, **k):
        log.append("backward(asleep)" if t.rollout.asleep else "backward(awake)")
        return backward(*a, **k)

    t.ds_engine.backward = recorded_backward
    t.train()
    compact = [e for i, e in enumerate(log) if i == 0 or e != log[i - 1]]  # runs of a call -> one
    assert compact == ["generate", "sleep", "backward(asleep)", "wake_up", "update_weights"] * 2, log


def test_zero3_reference_is_partitioned_and_scores_like_the_policy(world, tmp_path):
    from dprl.train.grpo import GRPOTrainer

    t = GRPOTrainer(_cfg(world, tmp_path / "z3", "steps=1", "save_every=0", "trainer.zero_stage=3",
                         "trainer.param_persistence_threshold=0"))
    ref_params = list(t.ref.module.parameters())
    # Partitioned: DeepSpeed owns every tensor and holds only this rank's shard outside a forward.
    assert ref_params and all(hasattr(p, "ds_id") and p.numel() == 0 for p in ref_params)
    t.train()
    row = read_metrics(str(tmp_path / "z3" / "metrics.jsonl"))[0]
    assert row["train/kl"] == pytest.approx(0.0, abs=1e-7)  # gathered reference == policy at step 0
    assert row["staleness/abs_logp_diff_max"] < 1e-4


def test_a_diverging_policy_stops_before_its_weights_are_saved_or_synced(world, tmp_path):
    from dprl.train.finite import NonFiniteError
    from dprl.train.grpo import GRPOTrainer

    # lr=1e4 turns 27 of the 58 tensors NaN in the second update while its loss still reads
    # as a small number (measured); the engine would then sample from a NaN policy.
    t = GRPOTrainer(_cfg(world, tmp_path / "nan", "trainer.lr=1e4", "save_every=1"))
    with pytest.raises(NonFiniteError, match=r"at step 2: .*weight tensors hold nan or inf"
                                             r".*last good state \(step 1\).*lower trainer.lr"):
        t.train()
    with open(tmp_path / "nan" / "state" / "trainer.json") as fh:
        assert json.load(fh)["step"] == 1
    assert not (tmp_path / "nan" / "final").exists()
    assert all(bool(torch.isfinite(p).all()) for p in t.rollout.model.parameters())


def test_a_shorter_rerun_never_overwrites_a_finished_run(world, tmp_path):
    from dprl.train.checkpoint import RunStateError
    from dprl.train.grpo import GRPOTrainer, run_grpo

    out = tmp_path / "done"
    GRPOTrainer(_cfg(world, out, "steps=2", "save_every=0")).train()
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(RunStateError, match=r"already holds step 2 of 2 \(finished\).*steps"):
        GRPOTrainer(_cfg(world, out, "steps=1", "save_every=0"))
    assert run_grpo(_cfg(world, out, "steps=2", "save_every=0")) == {}  # the same run: nothing to do
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == files

"""`dprl grpo`: GRPO for vision-language models with colocated rollouts.

One step, every phase timed into the metrics:
  rollout   G completions per prompt from the colocated rollout engine (vLLM in this process); with
            dynamic sampling, refill rounds replace groups whose rewards are all equal (DAPO)
  reward    named, weighted rule rewards over the whole batch (dprl.rewards, C++)
  ref/old   reference log-probs (frozen copy; skipped when beta = 0) and old log-probs (only
            when a rollout batch is used for more than one update, or for importance weights)
  update    group advantages, then the fused GRPO loss on completion positions only, in
            micro-batches with DeepSpeed gradient accumulation
  sync      the new weights into the rollout engine, bucket by bucket
Checkpoints hold the DeepSpeed state (model, optimizer, scheduler) and the step; prompts and
sampling seeds are functions of the step, so a resumed run continues exactly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from dprl.config import GRPOConfig, save_config
from dprl.kernels import GRPOLossParams
from dprl.train.advantages import group_advantages
from dprl.train.checkpoint import stop_if_non_finite
from dprl.rollout.base import answer_text
from dprl.train.dynamic_sampling import (SampledRound, assemble, count_informative, refill_size,
                                         reward_metrics)
from dprl.train.engine import plain_grad_norm, step_grad_norm
from dprl.train.finite import describe_non_finite, describe_non_finite_weights
from dprl.data.validate import DataError, check_data_file, report_bad_samples
from dprl.train.grpo_data import (grounding_request, load_prompt_samples, refill_indices, reward_columns,
                                  screen_prompts, step_indices)
from dprl.train.metrics import PhaseTimer, peak_memory_bytes, plot_curves
from dprl.models.chat import prompt_text
from dprl.models.group_attention import use_group_attention
from dprl.train.flops import TextModelShape, attention_pairs, forward_flops
from dprl.train.grpo_micro_batches import agreed_count, equalize, pack_micro_batches, plan_units
from dprl.train.policy import grpo_policy_loss, token_logprobs, unwrap
from dprl.train.shared_prompt import build_rows, encode_prompts, image_features
from dprl.train.stage_setup import (base_checkpoint, export_final, finished_before, metrics_logger, open_run,
                                    policy_engine)


@dataclass
class StepBatch:
    """A step's training batch: micro-batches of rows (dprl.train.shared_prompt), each prompt
    through the processor once and each image through the vision tower once."""

    micro_batches: list  # PolicyBatch, with seq_ids / token_index into the step's order
    lengths: torch.Tensor  # (S,) completion lengths
    offsets: torch.Tensor  # (S + 1,) where each completion's tokens start in the flat order
    padding_fraction: float  # share of the micro-batches' positions that are padding
    model_tokens: int  # positions one forward needs: each prompt once, then its completions
    attention_pairs: int  # (query, key) pairs one forward needs (dprl.train.flops)


def load_prompts(cfg: GRPOConfig, processor=None):
    """(grounding samples of the training file, samples set aside as {"question_id", "error"}):
    KVG-Bench's layout or the released problem/solution/image one (load_prompt_samples). With the
    processor, prompts the rollout engine could not take are set aside too (screen_prompts): done
    before the order of prompts is drawn, so it stays a function of (seed, step)."""
    samples, bad = load_prompt_samples(cfg.data.path, cfg.data.image_root, cfg.data.domains)
    if processor is not None:
        root = cfg.data.image_root or os.path.dirname(os.path.abspath(cfg.data.path))
        limit = cfg.rollout.max_model_len - cfg.rollout.max_tokens
        samples, too_long = screen_prompts(samples, processor, root, limit)
        bad = bad + too_long
        if not samples:
            raise DataError(f"no usable samples in {cfg.data.path!r} ({len(bad)} bad, first: "
                            f"{bad[0]['question_id']}: {bad[0]['error']})")
    return samples, bad


def _open(sample, root: str):
    from dprl.data.kvg import open_image

    return open_image(sample.image, root)


class GRPOTrainer:
    """Holds the policy's DeepSpeed engine, reference model, rollout engine and reward; `train()` runs."""

    def __init__(self, cfg: GRPOConfig, samples=None, open_image=None):
        from dprl.models.loading import load_model
        from dprl.rewards import from_config, reward_fn
        from dprl.rollout import build_rollout_engine
        from dprl.train.engine import build_reference_model

        self.cfg = cfg
        # The cosine runs over the optimizer steps this run will take.
        cfg.trainer.total_steps = cfg.steps * cfg.grpo.updates_per_rollout
        self.rank, self.world = open_run(cfg)
        self.is_main = self.rank == 0
        # The same run again, finished and exported, has nothing to do: no model, engine or data
        # is loaded for it (models and vLLM take minutes), and train() returns at once.
        self.finished = finished_before(cfg, cfg.steps, "steps", "grpo")
        if self.finished:
            return
        # A missing data file fails here, before anything loads or is written.
        if samples is None:
            check_data_file(cfg.data.path, "data.path")
        if self.is_main:
            save_config(cfg, cfg.output_dir)
        self.model_path, self.processor = base_checkpoint(cfg)
        if samples is None:
            samples, self.bad_samples = load_prompts(cfg, self.processor)
        else:
            self.bad_samples = []
        report_bad_samples("grpo", self.bad_samples, len(samples), cfg.output_dir, enabled=self.is_main)
        self.samples = samples
        self.image_root = cfg.data.image_root or os.path.dirname(os.path.abspath(cfg.data.path))
        self._open = open_image or (lambda s: _open(s, self.image_root))
        self.pad_id = self.processor.tokenizer.pad_token_id
        from dprl.rollout import VISION_TOKENS

        # The sampler never draws these; the trainer scores the same renormalised distribution.
        self.banned = torch.tensor(self.processor.tokenizer.convert_tokens_to_ids(list(VISION_TOKENS)))

        policy = load_model(self.model_path, dtype=cfg.trainer.dtype)
        self.ref = None
        if cfg.grpo.beta > 0:
            self.ref = load_model(self.model_path, dtype=cfg.trainer.dtype)
        # Shared groups are packed into one row and attended group by group (no N x N mask)
        # where the model runs SDPA; other attention implementations get padded rows and a mask.
        self.packed = cfg.grpo.share_prompts and all(use_group_attention(m) for m in (policy, self.ref) if m is not None)
        self.shape = TextModelShape.from_config(policy.config)
        # Restored from the last completed save on resume: prompts and sampling seeds are
        # functions of the step, so nothing else needs restoring.
        self.ds_engine, self.optimizer, self.scheduler, self.start_step = policy_engine(policy, cfg.trainer, cfg)
        if self.ref is not None:  # partitioned like the policy under ZeRO-3
            self.ref = build_reference_model(self.ref, cfg.trainer)
        # Built after the training world exists, so a colocated vLLM joins it.
        self.rollout = build_rollout_engine(self.model_path, cfg.rollout, dtype=cfg.model.dtype)
        self.reward = from_config(cfg.reward)
        self.accuracy = reward_fn("acc", 0.5)  # KVG-Bench's Acc@0.5, logged whatever is trained on
        self.loss_params = GRPOLossParams.from_config(cfg.grpo, cfg.rollout.max_tokens)
        if self.start_step:  # the rollout engine was built from the base model
            from dprl.train.weight_sync import sync_weights

            sync_weights(self.ds_engine, self.rollout, cfg.sync)

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, step: int) -> None:
        from dprl.train.checkpoint import save_state

        save_state(self.ds_engine, self.cfg.output_dir, step, total_steps=self.cfg.steps)

    # -- one step ---------------------------------------------------------------------------------
    def _sample_round(self, step: int, round_: int, indices: list[int], timer: PhaseTimer) -> SampledRound:
        """Rollout and rewards for the prompts at `indices` (round 0: the step's own prompts)."""
        cfg = self.cfg
        prompts = [self.samples[i] for i in indices]
        requests = [grounding_request(s.question, self._open(s)) for s in prompts]
        # Distinct per (step, round, rank) for max_sampling_rounds <= 100 and ranks < 7919.
        seed = cfg.rollout.seed + 1_000_003 * step + 7_919 * round_ + self.rank
        with timer("rollout"):
            comps = self.rollout.generate(requests, seed=seed)
        with timer("reward"):
            texts = [answer_text(self.processor.tokenizer, c.token_ids) for c in comps]
            columns = reward_columns(prompts, requests, comps)
            total, parts = self.reward.score(texts, **columns)
        accuracy = self.accuracy.score(texts, boxes=columns["boxes"])[0]
        return SampledRound(prompts, requests, comps, texts, torch.from_numpy(total).float(), parts, accuracy)

    def _sample_batch(self, step: int, timer: PhaseTimer) -> tuple[list[SampledRound], SampledRound, dict]:
        """The step's rollout rounds and the batch it trains on (with dynamic sampling, refill
        rounds replace groups whose rewards are all equal)."""
        cfg, G, per_step = self.cfg, self.cfg.rollout.n, self.cfg.data.prompts_per_step
        idx = step_indices(len(self.samples), step, per_step, self.rank, self.world, cfg.data.shuffle_seed)
        rounds = [self._sample_round(step, 0, idx, timer)]
        if not cfg.grpo.dynamic_sampling:
            return rounds, rounds[0], {}
        max_rounds = cfg.grpo.max_sampling_rounds
        while len(rounds) < max_rounds:
            informative, sampled = count_informative(rounds, G)
            count = refill_size(per_step - informative, informative, sampled, per_step)
            if count == 0:
                break
            idx = refill_indices(len(self.samples), step, len(rounds), count, per_step, self.rank,
                                 self.world, cfg.data.shuffle_seed, max_rounds)
            rounds.append(self._sample_round(step, len(rounds), idx, timer))
        batch, metrics = assemble(rounds, per_step, G)
        return rounds, batch, metrics

    def _prepare(self, requests, comps) -> "StepBatch":
        """The step's micro-batches, built once and reused by every pass (see StepBatch)."""
        cfg = self.cfg
        hf = unwrap(self.ds_engine)
        texts = [prompt_text(self.processor, r.messages) for r in requests]
        prompts = encode_prompts(self.processor, hf, texts, [r.images for r in requests])
        # A frozen tower (and merger) gives the same features in every pass and in the
        # reference model: compute them once, without grad.
        features = image_features(hf, prompts) if cfg.trainer.freeze_vision else None
        completions = [c.token_ids for c in comps]
        seq_len = [len(t) for t in completions]
        lengths = torch.tensor(seq_len, dtype=torch.long)  # (S,)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])  # (S + 1,)
        prompt_len = [p.length for p in prompts]
        units = plan_units([c.prompt_index for c in comps], cfg.grpo.share_prompts)
        plan = pack_micro_batches(units, prompt_len, seq_len, max_seqs=cfg.trainer.micro_batch_size,
                                  max_tokens=cfg.grpo.micro_batch_tokens, packed=self.packed)
        plan = equalize(plan, agreed_count(len(plan)))
        attn = getattr(hf.config, "_attn_implementation", "sdpa") or "sdpa"
        micro_batches = [build_rows(prompts, completions, units_, self.pad_id, offsets, features, attn,
                                    packed=self.packed) for units_ in plan]
        padded = sum(mb.model_inputs["input_ids"].numel() for mb in micro_batches)
        real = sum(prompt_len[u.prompt] + sum(seq_len[s] for s in u.seqs) for b in plan for u in b)
        groups: dict[int, list[int]] = {}
        for c, n in zip(comps, seq_len):
            groups.setdefault(c.prompt_index, []).append(n)
        model_tokens = sum(prompt_len[p] + sum(ts) for p, ts in groups.items())
        pairs = sum(attention_pairs(prompt_len[p], ts) for p, ts in groups.items())
        return StepBatch(micro_batches, lengths, offsets, 1 - real / padded, model_tokens, pairs)

    def _logprobs(self, model, micro_batches, num_tokens: int) -> torch.Tensor:
        """The log-probs of every sampled token under `model`, micro-batch by micro-batch -> (N,)."""
        out = torch.empty(num_tokens)  # (N,)
        for mb in micro_batches:
            out[mb.token_index] = token_logprobs(model, mb, self.cfg.rollout.temperature, self.banned)
        return out

    def _flops_metrics(self, steps: StepBatch, comp_tokens: int, seconds: dict, step_s: float) -> dict:
        """Model TFLOPs of the step (dprl.train.flops) and their rate; MFU when log.peak_tflops
        is set. A forward for the rollout, the reference and the old pass, three per update."""
        cfg = self.cfg
        fwd = forward_flops(self.shape, steps.model_tokens, steps.attention_pairs, comp_tokens)
        passes = {"rollout": 1, "ref": 1 if self.ref is not None else 0, "old": 1 if "old" in seconds else 0,
                  "update": 3 * cfg.grpo.updates_per_rollout}
        total = fwd * sum(passes.values())
        train = fwd * (passes["ref"] + passes["old"] + passes["update"])
        train_s = sum(seconds.get(k, 0.0) for k in ("prepare", "ref", "old", "update"))
        out = {"train/model_tflop": total / 1e12,
               "throughput/tflops_per_s": total / 1e12 / max(step_s, 1e-9),
               "throughput/train_tflops_per_s": train / 1e12 / max(train_s, 1e-9)}
        if cfg.log.peak_tflops > 0:
            out["throughput/mfu"] = out["throughput/tflops_per_s"] / cfg.log.peak_tflops
            out["throughput/train_mfu"] = out["throughput/train_tflops_per_s"] / cfg.log.peak_tflops
        return out

    def step(self, step: int) -> dict:
        cfg, timer = self.cfg, PhaseTimer()
        G = cfg.rollout.n
        rounds, batch, sampling = self._sample_batch(step, timer)
        requests, comps = batch.requests, batch.comps
        rewards = batch.rewards  # (S,)
        with timer("reward"):
            adv = group_advantages(rewards, G, cfg.grpo.advantage, cfg.grpo.advantage_eps)

        # Generation is done until the sync: free the rollout engine's KV cache for the training passes
        # (GPU; a no-op on CPU). sync_weights wakes it before loading the new weights.
        self.rollout.sleep(1)
        with timer("prepare"):
            steps = self._prepare(requests, comps)
        micro_batches, lengths, offsets = steps.micro_batches, steps.lengths, steps.offsets
        S, N = len(comps), int(offsets[-1])
        rollout_logp = torch.cat([c.logprob_tensor() for c in comps])  # (N,)

        ref_logp = old_logp = None
        with torch.no_grad():
            if self.ref is not None:
                with timer("ref"):
                    ref_logp = self._logprobs(self.ref, micro_batches, N)  # (N,)
            if cfg.grpo.updates_per_rollout > 1 or cfg.grpo.tis_cap > 0:
                with timer("old"):
                    # The trainer's view of the sampled tokens before any update: the importance
                    # ratio's denominator when a batch is reused or importance-weighted.
                    old_logp = self._logprobs(self.ds_engine, micro_batches, N)  # (N,)

        # A rollout batch is one optimizer step, so the first update epoch runs on the weights the
        # rollout sampled with: without an `old` pass, its forward log-probs are the trainer's side
        # of the staleness check, and a step costs one policy forward fewer (TRL does the same for
        # a single update).
        trainer_logp = old_logp if old_logp is not None else torch.empty(N)  # (N,)

        lr = self.scheduler.get_last_lr()[0]  # the rate this step's updates use
        sums: dict[str, float] = {}
        grad_norms: list[float | None] = []  # one per optimizer step (update epoch)
        with timer("update"):
            for epoch in range(cfg.grpo.updates_per_rollout):
                for i, mb in enumerate(micro_batches):
                    # Each micro-batch's loss is its share of the batch's (num_seqs / num_tokens
                    # are the batch's), so accumulation adds them up unscaled and the optimizer
                    # steps once per epoch, at the last one.
                    self.ds_engine.set_gradient_accumulation_boundary(i == len(micro_batches) - 1)
                    tok = mb.token_index  # (n,)
                    loss, m, logp = grpo_policy_loss(
                        self.ds_engine, mb, adv.advantages[mb.seq_ids],
                        old_logp=None if old_logp is None else old_logp[tok],
                        ref_logp=None if ref_logp is None else ref_logp[tok],
                        rollout_logp=rollout_logp[tok] if cfg.grpo.tis_cap > 0 else None,
                        temperature=cfg.rollout.temperature, params=self.loss_params,
                        num_seqs=S, num_tokens=N, banned=self.banned)
                    if old_logp is None and epoch == 0:
                        trainer_logp[tok] = logp
                    self.ds_engine.backward(loss, scale_wrt_gas=False)
                    last = i == len(micro_batches) - 1
                    plain = plain_grad_norm(self.ds_engine, cfg.trainer) if last else None
                    self.ds_engine.step()
                    if last:  # the optimizer stepped
                        grad_norms.append(step_grad_norm(self.ds_engine, plain))
                    share = len(tok) / N  # metrics are token means: weight each by its tokens
                    sums["loss"] = sums.get("loss", 0.0) + loss.item()
                    for k, v in m.items():
                        sums[k] = sums.get(k, 0.0) + float(v) * share
        epochs = cfg.grpo.updates_per_rollout
        self._stop_if_non_finite(step + 1, sums.get("loss", 0.0) / epochs, grad_norms)

        with timer("sync"):
            from dprl.train.weight_sync import sync_weights

            sync = sync_weights(self.ds_engine, self.rollout, cfg.sync)

        from dprl.train.staleness import staleness_metrics

        comp_tokens = int(lengths.sum())
        row = {
            **reward_metrics(rounds),
            **{f"train/{k}": v / epochs for k, v in sums.items()},
            "train/micro_batches": len(micro_batches),
            "train/padding_fraction": steps.padding_fraction,
            "train/lr": lr,
            "data/bad_samples": len(self.bad_samples),
            "train/grad_norm": float("nan") if grad_norms[-1] is None else grad_norms[-1],
            "train/zero_variance_groups": adv.num_zero_variance,
            "train/groups": batch.num_groups,
            **sampling,
            "completion/length_mean": float(lengths.float().mean()),
            "completion/length_max": int(lengths.max()),
            "completion/clipped_fraction": sum(c.finish_reason == "length" for c in comps) / len(comps),
            **staleness_metrics(rollout_logp, trainer_logp),
            **timer.metrics(),
            **{k: v for k, v in sync.items() if k != "time/sync_s"},  # the phase timer's is kept
            "memory/peak_gib": peak_memory_bytes() / 2**30,
        }
        step_s = sum(timer.seconds.values())
        row["time/step_s"] = step_s
        row.update(self._flops_metrics(steps, comp_tokens, timer.seconds, step_s))
        row["throughput/completion_tokens_per_s"] = comp_tokens / max(step_s, 1e-9)
        row["throughput/rollout_tokens_per_s"] = comp_tokens / max(timer.seconds["rollout"], 1e-9)
        return row

    def _stop_if_non_finite(self, done: int, loss: float, grad_norms: list[float | None]) -> None:
        """Raises NonFiniteError on every rank when step `done`'s loss, grad norms or weights hold
        nan or inf: before the sync, so the rollout engine never samples from such weights, and before any
        save. The weights are checked every step because GRPO's loss can stay small and finite
        over NaN weights (measured at lr=1e4); one pass over them costs less than the sync, which
        reads them all too."""
        names = ["grad norm"] if len(grad_norms) == 1 else [f"grad norm of update {e + 1}"
                                                            for e in range(len(grad_norms))]
        found = [describe_non_finite({"loss": loss, **dict(zip(names, grad_norms))}),
                 describe_non_finite_weights(self.ds_engine.module)]
        stop_if_non_finite("; ".join(f for f in found if f), self.cfg.output_dir, done)

    # -- the run ----------------------------------------------------------------------------------
    def train(self, stop_after: int | None = None) -> dict:
        """Runs steps start_step..cfg.steps-1 (or stops after `stop_after` steps, for tests)."""
        cfg = self.cfg
        if self.finished:  # finished and exported before: nothing to train or write
            return {}
        self.logger = metrics_logger(cfg, cfg.steps, self.start_step, "grpo")
        last = cfg.steps if stop_after is None else min(cfg.steps, self.start_step + stop_after)
        row = {}
        for step in range(self.start_step, last):
            if step + 1 in cfg.log.profile_steps:
                row = self._profiled_step(step)
            else:
                row = self.step(step)
            self.logger.log(step + 1, row)
            self.logger.advance()
            done = step + 1
            if (cfg.save_every and done % cfg.save_every == 0) or done == cfg.steps:
                self.save_checkpoint(done)
        if last == cfg.steps:
            self.finish()
        self.logger.close()
        return row

    def _profiled_step(self, step: int) -> dict:
        """One step under torch.profiler; its trace (phases marked) goes to
        <output_dir>/profile/step<N>_rank<R>.json, for chrome://tracing or ui.perfetto.dev."""
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with profile(activities=activities) as prof:
            row = self.step(step)
        out = os.path.join(self.cfg.output_dir, "profile")
        os.makedirs(out, exist_ok=True)
        prof.export_chrome_trace(os.path.join(out, f"step{step + 1}_rank{self.rank}.json"))
        return row

    def finish(self) -> None:
        """HF-format weights of the trained policy and the run's curves, for eval and plots."""
        export_final(self.ds_engine, self.processor, self.cfg, self.cfg.steps)
        if self.is_main:
            plot_curves(self.logger.path, ["reward/mean", "reward/acc@0.5", "train/kl",
                                           "train/clip_fraction", "completion/length_mean"],
                        os.path.join(self.cfg.output_dir, "curves.png"), title="GRPO")


def run_grpo(cfg: GRPOConfig) -> dict:
    """Trains; returns the last step's metrics ({} when the run was finished before)."""
    return GRPOTrainer(cfg).train()

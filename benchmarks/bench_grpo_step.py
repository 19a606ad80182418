"""The GRPO step, phase by phase: this tree against another revision of dprl on the same work.

    python benchmarks/bench_grpo_step.py [--size 30m|tiny] [--model DIR] [--baseline REV|none]
                                         [--trl] [--trl-vllm] [--variant NAME:KEY=VALUE,...] [--steps 4] [--rounds 2]

Both contenders run `dprl grpo` on the same model directory, the same prompts and images in the
same order, the same sampling seed, G = 8 completions of at most 112 tokens for each of 8 prompts
per step, the same reward, one update per rollout, fp32, beta 0.04 (a reference pass), each in
its own process, in turns (A B A B). The first step of each process is a warm-up and is left
out. From the run's own per-phase timers (metrics.jsonl) it reports median seconds per phase,
"ref + update" (with this tree's batch preparation counted in: processor, image features and
row building), completion tokens per step, and the baseline/this ratio per pair of runs.
With --trl, TRL's GRPOTrainer (benchmarks/trl_grpo.py) runs the same work as a third contender
and its whole-step time is compared; its phases are not split. --trl-vllm does the same with
TRL's colocated vLLM sampler (trl_grpo.py --vllm) as the contender `trl-vllm`. Each --variant runs this tree
again with its overrides (say `bf16-rollout:model.dtype=bfloat16` for bf16 rollouts with fp32
training, or `compiled:rollout.enforce_eager=false`), and `logp_diff_max` shows what the change
costs in sampler/trainer agreement.

The baseline revision (default: the commit before the shared-prompt rows) is checked out as a
git worktree beside the build; the compiled reward extension is copied from this tree when the
C++ sources are the same. Rows go to benchmarks/results/grpo_step.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from harness import append_rows, print_table  # noqa: E402

# The issue's ~30M configuration: width 512, 8 layers, 64 visual tokens (224 x 224 pixels).
SIZES = {
    "30m": ["hidden_size=512", "num_layers=8", "num_heads=8", "num_kv_heads=4", "intermediate_size=1536",
            "vision_depth=4", "vision_embed_dim=256", "vision_num_heads=4",
            f"max_pixels={224 * 224}", f"min_pixels={224 * 224}"],
    "tiny": [],
}
BASELINE = "558a326"  # GRPO with one row per completion, the batch rebuilt per micro-batch
PHASES = ("rollout", "reward", "prepare", "ref", "old", "update", "sync")


def _run(cmd, env=None, cwd=ROOT):
    out = subprocess.run(cmd, env={**os.environ, **(env or {})}, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-4000:] + out.stderr[-4000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return out


def prepare_inputs(work: str, size: str, model: str | None) -> tuple[str, str]:
    """The model directory and the world's training file both contenders use."""
    world = os.path.join(work, "world")
    _run([sys.executable, "-m", "dprl.cli", "world", "--config", "configs/world_tiny.yaml",
          f"output_dir={world}", "train_per_domain=40", "val_per_domain=1", "test_per_domain=1",
          "fgvr_train_per_domain=1", "fgvr_test_per_domain=1", "workers=1"])
    if model is None:
        model = os.path.join(work, f"model-{size}")
        _run([sys.executable, "-m", "dprl.cli", "make-tiny-model", model, *SIZES[size]])
    # Absolute: the baseline contender runs from its own worktree.
    return os.path.abspath(model), os.path.abspath(os.path.join(world, "kvg_train.jsonl"))


def baseline_tree(work: str, rev: str) -> str:
    """A worktree of `rev` that imports as dprl (reward extension copied or rebuilt)."""
    tree = os.path.join(work, f"dprl-{rev}")
    _run(["git", "worktree", "add", "--detach", tree, rev])
    same_csrc = subprocess.run(["git", "diff", "--quiet", rev, "HEAD", "--", "csrc", "setup.py"], cwd=ROOT).returncode == 0
    built = [f for f in os.listdir(os.path.join(ROOT, "dprl")) if f.startswith("_C") and f.endswith(".so")]
    if same_csrc and built:
        shutil.copy(os.path.join(ROOT, "dprl", built[0]), os.path.join(tree, "dprl", built[0]))
    else:
        _run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tree)
    return tree


def run_contender(tree: str, out: str, model: str, data: str, steps: int, extra: list[str]) -> list[dict]:
    """`dprl grpo` from `tree` for `steps` steps -> its metrics rows after the warm-up step."""
    cmd = [sys.executable, "-m", "dprl.cli", "grpo", "--config", os.path.join(tree, "configs", "grpo_tiny.yaml"),
           f"output_dir={out}", f"model.path={model}", f"data.path={data}", f"steps={steps}", "save_every=0",
           "rollout.n=8", "data.prompts_per_step=8", "rollout.max_tokens=112", "rollout.temperature=0.6",
           "trainer.micro_batch_size=64", "trainer.grad_accum_steps=1", "grpo.beta=0.04",
           *extra]
    _run(cmd, env={"PYTHONPATH": tree}, cwd=tree)
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return rows[1:]


def run_trl(out: str, model: str, data: str, steps: int, vllm: bool = False) -> list[dict]:
    """TRL's GRPOTrainer (benchmarks/trl_grpo.py; with `vllm`, its colocated vLLM sampler) in its
    own process -> rows after the warm-up."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "trl.json")
    _run([sys.executable, os.path.join(HERE, "trl_grpo.py"), model, data, path, f"--steps={steps}",
          *(["--vllm"] if vllm else [])])
    with open(path) as fh:
        res = json.load(fh)
    lengths = res["length_mean"] or [float("nan")] * len(res["step_s"])
    return [{"time/step_s": t, "completion/length_mean": n, "memory/peak_gib": res["peak_rss_gib"]}
            for t, n in list(zip(res["step_s"], lengths))[1:]]


def summarize(name: str, rows: list[dict]) -> dict:
    med = {p: statistics.median(r.get(f"time/{p}_s", 0.0) for r in rows) for p in PHASES}
    work = [r.get("time/prepare_s", 0.0) + r.get("time/ref_s", 0.0) + r.get("time/update_s", 0.0) for r in rows]
    lengths = [r["completion/length_mean"] for r in rows]
    return {"contender": name, "steps": len(rows), **{f"{p}_s": med[p] for p in PHASES},
            "ref_update_s": statistics.median(work),
            "step_s": statistics.median(r["time/step_s"] for r in rows),
            "completion_tokens": statistics.median(n * 64 for n in lengths),
            "length_mean": statistics.median(lengths),
            "peak_rss_gib": max(r["memory/peak_gib"] for r in rows),
            # How far the sampler's log-probs are from the trainer's (rollout dtype, compilation).
            "logp_diff_max": max((r["staleness/abs_logp_diff_max"] for r in rows
                                  if "staleness/abs_logp_diff_max" in r), default=float("nan"))}


def _ratios(per_round: dict, other: str, key: str) -> list[float]:
    """other / dprl for `key`, one per round (each pair of processes ran back to back)."""
    return [summarize(other, b)[key] / summarize("dprl", a)[key]
            for a, b in zip(per_round["dprl"], per_round[other])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="30m")
    ap.add_argument("--model", help="a checkpoint directory instead of a fresh model of --size")
    ap.add_argument("--baseline", default=BASELINE, help="git revision to compare against ('none': skip)")
    ap.add_argument("--trl", action="store_true", help="also run TRL's GRPOTrainer (pip install -e .[bench])")
    ap.add_argument("--trl-vllm", action="store_true",
                    help="also run TRL's GRPOTrainer with its colocated vLLM sampler (needs vllm)")
    ap.add_argument("--steps", type=int, default=4, help="steps per process (the first is a warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="processes per contender, in turns")
    ap.add_argument("--work", help="scratch directory (default: a temporary one)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                    help="also run this tree with these overrides, e.g. "
                         "'bf16-rollout:model.dtype=bfloat16' (repeatable)")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="bench-grpo-")
    model, data = prepare_inputs(work, args.size, args.model)
    base = f"dprl@{args.baseline}"
    contenders = {"dprl": lambda out: run_contender(ROOT, out, model, data, args.steps, [])}
    tree = None
    if args.baseline != "none":
        tree = baseline_tree(work, args.baseline)
        contenders[base] = lambda out: run_contender(tree, out, model, data, args.steps, [])
    for spec in args.variant:
        name, _, overrides = spec.partition(":")
        extra = [o for o in overrides.split(",") if o]
        contenders[f"dprl+{name}"] = lambda out, extra=extra: run_contender(ROOT, out, model, data, args.steps, extra)
    if args.trl:
        contenders["trl"] = lambda out: run_trl(out, model, data, args.steps)
    if args.trl_vllm:
        contenders["trl-vllm"] = lambda out: run_trl(out, model, data, args.steps, vllm=True)
    per_round: dict[str, list[list[dict]]] = {k: [] for k in contenders}
    try:
        for r in range(args.rounds):
            for name, run in contenders.items():
                per_round[name].append(run(os.path.join(work, f"{name.replace('@', '-')}-{r}")))
                print(f"round {r} {name}: {summarize(name, per_round[name][-1])['step_s']:.2f} s/step", flush=True)
    finally:
        if tree:
            subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT)
    rows = [summarize(name, [x for rnd in rounds for x in rnd]) for name, rounds in per_round.items()]
    for row in rows:
        row.update(size="checkpoint" if args.model else args.size, baseline=args.baseline)  # no local paths in rows
        if row["contender"] == "dprl":
            for other in per_round:
                if other == "dprl":
                    continue
                tag = "base" if other == base else other
                steps_ = _ratios(per_round, other, "step_s")
                row.update({f"{tag}_step_ratio_min": min(steps_), f"{tag}_step_ratio_median": statistics.median(steps_),
                            f"{tag}_step_ratio_max": max(steps_)})
                if other == base:
                    work_ = _ratios(per_round, other, "ref_update_s")
                    row.update(base_ref_update_ratio_min=min(work_),
                               base_ref_update_ratio_median=statistics.median(work_),
                               base_ref_update_ratio_max=max(work_))
                print(f"{other} / dprl per round, whole step: {', '.join(f'{p:.2f}x' for p in steps_)}"
                      + (f"; ref + update: {', '.join(f'{p:.2f}x' for p in work_)}" if other == base else ""))
    print_table(rows, ["contender", "steps", "rollout_s", "prepare_s", "ref_s", "update_s", "ref_update_s",
                       "sync_s", "step_s", "length_mean", "peak_rss_gib", "logp_diff_max"])
    append_rows("grpo_step", rows)
    print(json.dumps(rows[0]))


if __name__ == "__main__":
    main()

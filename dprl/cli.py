"""`dprl <command>`: YAML config + dotted overrides -> validated config -> entry point.

Only commands that work are registered here; each new stage adds its own.
"""
from __future__ import annotations

import argparse
import sys

from dprl.config import (ConfigError, DataEngineConfig, EvalConfig, GRPOConfig, PipelineConfig, SFTConfig,
                         SmokeConfig, TinyModelConfig, WorldConfig, load_config)
from dprl.errors import UserFacingError
from dprl.host_memory import reexec_keeping_freed_memory
from dprl.run_dir import Terminated, lock_run_dir
from dprl.train.writable import check_writable

RESUME_HINT = "run the same command again to resume"


def _load(cls: type, args: argparse.Namespace):
    """The command's validated config, with its output_dir locked for this process (main
    releases it): a second run in the same directory fails here, before any work."""
    cfg = load_config(cls, args.config, args.overrides)
    check_writable(cfg.output_dir)  # a read-only or full disk is named here, not in a traceback
    args.run_dir_lock = lock_run_dir(cfg.output_dir)
    return cfg


def _cmd_smoke(args: argparse.Namespace) -> int:
    cfg = _load(SmokeConfig, args)
    from dprl.smoke import print_report, run_smoke

    result = run_smoke(cfg)
    print_report(result, cfg.output_dir)
    return 0 if result["ok"] else 1


def _cmd_sft(args: argparse.Namespace) -> int:
    cfg = _load(SFTConfig, args)
    from dprl.train.sft import run_sft

    result = run_sft(cfg)
    if result["rank"] == 0:
        where = result["final_dir"] or f"{result['output_dir']}/state (stopped early; run again to resume)"
        print(f"sft: {result['steps']}/{result['total_steps']} steps, final loss "
              f"{result['final_loss']:.4f}, {result['seconds']:.0f}s on {result['world_size']} rank(s) "
              f"-> {where}")
    return 0


def _cmd_make_tiny_model(args: argparse.Namespace) -> int:
    overrides = [f"arch={args.arch}", f"seed={args.seed}"] + list(args.overrides)
    cfg = load_config(TinyModelConfig, None, overrides)
    from dprl.models.tiny import make_tiny_model

    out = make_tiny_model(args.out, cfg)
    print(f"wrote {cfg.arch} tiny model to {out}")
    return 0


def _cmd_world(args: argparse.Namespace) -> int:
    cfg = _load(WorldConfig, args)
    from dprl.data.world import generate_world, print_summary

    print_summary(generate_world(cfg), cfg.output_dir)
    return 0


def _cmd_data_engine(args: argparse.Namespace) -> int:
    cfg = _load(DataEngineConfig, args)
    from dprl.data.engine.run import markdown, run_data_engine

    try:
        report = run_data_engine(cfg)
    except ValueError as err:  # no source, or a source that cannot be read: say which
        print(f"dprl data-engine: {err}", file=sys.stderr)
        return 2
    print(markdown(report) + f"\neverything is in {cfg.output_dir}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    cfg = _load(EvalConfig, args)
    from dprl.eval.evaluate import print_summary, run_eval

    try:
        summary = run_eval(cfg)
    except (FileNotFoundError, ValueError) as err:  # missing or unusable data: say which
        print(f"dprl eval: {err}", file=sys.stderr)
        return 2
    print_summary(summary, cfg.output_dir)
    return 0


def _cmd_grpo(args: argparse.Namespace) -> int:
    cfg = _load(GRPOConfig, args)
    from dprl.train.grpo import run_grpo

    row = run_grpo(cfg)
    if row:
        print(f"last step: reward {row['reward/mean']:.3f}, Acc@0.5 {row['reward/acc@0.5']:.3f}, "
              f"kl {row.get('train/kl', 0.0):.4f}; metrics, curves and the final checkpoint in "
              f"{cfg.output_dir}")
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    cfg = _load(PipelineConfig, args)
    from dprl.pipeline import run_pipeline

    try:
        result = run_pipeline(cfg)
    except RuntimeError as err:
        print(f"dprl pipeline: {err}", file=sys.stderr)
        return 1
    times = ", ".join(f"{k} {v:.0f}s" for k, v in result["seconds"].items())
    if result["table"] and "eval" not in result["seconds"]:  # the eval stage printed it already
        print("\n" + result["table"])
    print(f"pipeline done ({times or 'nothing left to run'}); everything is in {result['output_dir']}")
    return 0


def _config_command(sub, name: str, func, help: str, description: str, example: str,
                    config_hint: str = "") -> None:
    """A command that takes --config YAML and dotted key=value overrides."""
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("--config", help=f"YAML config file ({config_hint or f'see configs/{name}_tiny.yaml'})")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=f"dotted overrides, e.g. {example}")
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dprl",
        description="Performance-first GRPO for vision-language models (the DeepPerception recipe).",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    _config_command(
        sub, "pipeline", _cmd_pipeline,
        "the whole recipe: world -> CoT-SFT -> GRPO -> eval (the README's main job)",
        "Run the DeepPerception recipe end to end on one machine, each stage in its own process: "
        "generate the world, CoT-SFT, GRPO, then evaluate the untrained, SFT and SFT+GRPO models "
        "and the trivial baselines side by side. Rerunning skips stages finished with the same "
        "settings and resumes an interrupted one; if a finished stage's settings changed, it "
        "stops before any work and names the changed keys.",
        "grpo.steps=50 sft.trainer.lr=1e-3")
    _config_command(
        sub, "smoke", _cmd_smoke,
        "run the stack end to end: tiny model, vLLM sampling, transformers log-probs, compare",
        "Sample completions for image+text prompts with vLLM in-process and check that "
        "transformers gives the same log-probs for the sampled tokens.",
        "rollout.n=8")
    _config_command(
        sub, "sft", _cmd_sft,
        "stage 1: supervised fine-tuning on chain-of-thought grounding data (DeepSpeed)",
        "Fine-tune a Qwen2-VL / Qwen2.5-VL checkpoint on chain-of-thought grounding samples with "
        "DeepSpeed (ZeRO 0-3); writes an HF checkpoint, resumable state, metrics.jsonl, "
        "TensorBoard logs and loss.png. Multi-process: torchrun --nproc_per_node N -m dprl.cli sft ...",
        "trainer.lr=1e-5")

    p = sub.add_parser(
        "make-tiny-model",
        help="write a randomly initialised tiny Qwen2-VL / Qwen2.5-VL checkpoint (no download)",
        description="Write a tiny, randomly initialised checkpoint in standard HF format that "
                    "transformers and vLLM load. Extra key=value pairs set size knobs "
                    "(hidden_size, num_layers, vocab_size, ...).",
    )
    p.add_argument("out", help="output directory")
    p.add_argument("--arch", choices=["qwen2_vl", "qwen2_5_vl"], default="qwen2_vl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="size knobs, e.g. hidden_size=256")
    p.set_defaults(func=_cmd_make_tiny_model)

    _config_command(
        sub, "world", _cmd_world,
        "generate the synthetic fine-grained KVG world (grounding, FGVR, knowledge corpus)",
        "Draw the synthetic world of 10 domains (5 seen, 5 unseen) and write grounding samples "
        "with chains of thought, FGVR multiple choice and the text-only knowledge corpus as JSONL "
        "+ PNG files in KVG-Bench's schema.",
        "seed=1")
    _config_command(
        sub, "eval", _cmd_eval,
        "score checkpoints on KVG-Bench-format grounding (Acc@0.5) or FGVR data, side by side",
        "Generate answers (vLLM greedy or HF generate), parse them with the reward engine and "
        "write predictions, metrics and a Table-1 style Markdown table. Re-running skips samples "
        "already scored.",
        "backend=hf data.max_per_domain=10")
    _config_command(
        sub, "grpo", _cmd_grpo,
        "GRPO with colocated rollouts, IoU/format rewards and the fused loss (DeepSpeed)",
        "Stage 2 of the recipe: sample G completions per prompt with the colocated engine, score "
        "them with rule rewards, update the policy with the GRPO loss and push the new weights "
        "into the engine, every step. Resumes from the last checkpoint in output_dir. "
        "Multi-process: torchrun --nproc_per_node N -m dprl.cli grpo ...",
        "grpo.beta=0.02 trainer.lr=1e-6")
    _config_command(
        sub, "data-engine", _cmd_data_engine,
        "fine-grained recognition data on disk -> knowledge-filtered, teacher-reasoned KVG samples",
        "The recipe's data engine: read FGVR data sets already on disk (image folders, CUB-200-2011, "
        "FGVC-Aircraft, datasets tables), keep the categories the model knows, compose "
        "multi-entity pictures with exact boxes, have a teacher checkpoint write chains of thought "
        "kept by IoU (the SFT set) and keep the prompts the policy gets right sometimes (the RL "
        "set), in the world's file format, with a report of every stage.",
        "teacher.model_path=/ckpt/teacher data.composition.samples_per_domain=500",
        "see the README's data engine section; benchmarks/data_engine_world.py runs it on the world")
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # started as a program (not called by code): set up malloc first
        reexec_keeping_freed_memory()
    parser = build_parser()
    # key=value pairs may come before or after options; argparse alone would reject the later ones.
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if "=" not in a or a.startswith("-")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(getattr(args, "overrides", [])) + extra
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"dprl {args.command}: config error: {err}", file=sys.stderr)
        return 2
    except UserFacingError as err:  # a busy run directory, a state that does not fit, a diverged run
        print(f"dprl {args.command}: {err}", file=sys.stderr)
        return 1
    # A stop asked for is not a crash: one line, no traceback, and the way back in.
    except KeyboardInterrupt:
        print(f"dprl {args.command}: interrupted; {RESUME_HINT}", file=sys.stderr)
        return 130
    except Terminated:
        print(f"dprl {args.command}: terminated; {RESUME_HINT}", file=sys.stderr)
        return 143
    finally:
        lock = getattr(args, "run_dir_lock", None)
        if lock is not None:
            lock.close()


if __name__ == "__main__":
    sys.exit(main())

"""The data engine end to end on the tiny world, against the world's own template samples.

Source: the world's FGVR training pictures (one entity each, seen domains only) written as image
folders. Model, teacher and policy: a CoT-SFT checkpoint of the main job. The engine keeps the
categories the checkpoint knows, composes grid pictures like the world's, keeps the teacher's
chains whose box has IoU >= 0.5 (the SFT set) and the prompts it gets right sometimes (the RL
set). Then the tiny model is fine-tuned on the engine's SFT set with the main job's SFT budget
(same steps, same knowledge mixture) and evaluated next to the main job's CoT-SFT checkpoint on
the world's test split.

    python benchmarks/data_engine_world.py --run runs/pipeline --out runs/data_engine_world

Prints the engine's report and the evaluation table, and writes both under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
R1_TEMPLATE = ("{question} Output the thinking process in <think> </think> and final answer "
               "(bounding box) in <answer> </answer> tags.")


def _dprl(*args: str) -> None:
    cmd = [sys.executable, "-m", "dprl.cli", *args]
    print("+ dprl " + " ".join(args), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="runs/pipeline", help="a finished main-job run directory")
    ap.add_argument("--out", default="runs/data_engine_world")
    ap.add_argument("--samples-per-domain", type=int, default=400)
    ap.add_argument("--teacher-samples", type=int, default=2, help="chains per SFT prompt (n)")
    ap.add_argument("--no-knowledge", action="store_true", help="skip the knowledge filter")
    ap.add_argument("--stage", choices=["engine", "sft", "eval", "all"], default="all")
    args = ap.parse_args()
    run, out = os.path.abspath(args.run), os.path.abspath(args.out)
    world, checkpoint = os.path.join(run, "world"), os.path.join(run, "sft", "final")
    engine_dir = os.path.join(out, "engine")
    if args.stage in ("engine", "all"):
        from dprl.config import SEEN_DOMAINS, DataEngineConfig, load_config
        from dprl.data.engine.run import markdown, run_data_engine
        from dprl.data.engine.world_folder import world_image_folders

        trees = world_image_folders(world, os.path.join(out, "folders"), "train", "fgvr",
                                    domains=SEEN_DOMAINS)
        sources = ", ".join(f"{{kind: image_folder, path: '{t}', domain: {d}, crop: 0.72}}"
                            for d, t in trees.items())
        overrides = [
            f"output_dir={engine_dir}", f"model.path={checkpoint}", f"data.sources=[{sources}]",
            f"data.composition.samples_per_domain={args.samples_per_domain}",
            # The world's pictures: 112 x 112, 2-4 entities in a 2 x 2 grid, pale background.
            "data.composition.max_pixels=12544", "data.composition.max_entities=4",
            "data.composition.layouts={grid: 1, row: 0, column: 0, free: 0}",
            "data.composition.background=[217, 214, 209]", "data.composition.image_format=png",
            "rl_share=0.25", f"knowledge.enabled={not args.no_knowledge}",
            # The tiny checkpoint knows one prompt: the R1 instruction it was fine-tuned on.
            f"teacher.template={json.dumps(R1_TEMPLATE)}", f"teacher.rollout.n={args.teacher_samples}",
            "teacher.rollout.temperature=0.6", "teacher.rollout.max_tokens=112",
            "difficulty.rollout.temperature=0.6", "difficulty.rollout.max_tokens=112",
            # The world's knowledge base lists each category's attributes (colour, mark): the
            # knowledge probe's look question, asked as the main job's probe asks it.
            "knowledge.kind=look", f"knowledge.knowledge_path={os.path.join(world, 'knowledge_base.jsonl')}",
            f"knowledge.describe_template={json.dumps('What does the {entity} look like?')}",
            "knowledge.rollout.max_tokens=48"]
        cfg = load_config(DataEngineConfig, None, overrides)
        t0 = time.perf_counter()
        report = run_data_engine(cfg)
        print(markdown(report) + f"\nengine: {time.perf_counter() - t0:.0f}s")
    sft_dir = os.path.join(out, "sft")
    if args.stage in ("sft", "all"):
        # The main job's SFT stage (configs/sft_tiny.yaml) with the engine's samples instead of
        # the world's: the same 3000 optimizer steps and the same knowledge mixture.
        _dprl("sft", "--config", "configs/sft_tiny.yaml", f"output_dir={sft_dir}",
              f"data.train_path={os.path.join(engine_dir, 'kvg_sft.jsonl')}",
              f"data.knowledge_path={os.path.join(world, 'knowledge_corpus.jsonl')}", "max_steps=3000")
    if args.stage in ("eval", "all"):
        _dprl("eval", "--config", "configs/eval_tiny.yaml", f"output_dir={os.path.join(out, 'eval')}",
              f"data.path={os.path.join(world, 'kvg_test.jsonl')}", "data.max_per_domain=100",
              "rollout.max_tokens=112",
              f"checkpoints=[{{name: cot-sft-world, path: '{checkpoint}'}}, "
              f"{{name: cot-sft-engine, path: '{os.path.join(sft_dir, 'final')}'}}]")
        print(open(os.path.join(out, "eval", "table.md")).read())
    summary = {"engine": json.load(open(os.path.join(engine_dir, "report.json")))
               if os.path.isfile(os.path.join(engine_dir, "report.json")) else None}
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

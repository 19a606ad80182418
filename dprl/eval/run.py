"""`dprl eval`: score checkpoints on a KVG-Bench-format (or FGVR) data set, side by side.

For each checkpoint: generate answers through the rollout contract (vLLM greedy, or HF generate),
parse and score them as the batches finish, and append them to
`output_dir/<name>/predictions.jsonl`; a re-run skips the question ids already there. Then the
metrics of every checkpoint (and of the trivial baselines) go to `metrics.json` and a Table-1
style `table.md`. Samples that cannot be used are listed in `bad_samples.jsonl` by id.
"""
from __future__ import annotations

import json
import os
import time

from dprl.config import CheckpointConfig, EvalConfig, save_config
from dprl.data.kvg import Sample, load_samples, open_image
from dprl.data.prompts import DESCRIBE_TEMPLATE, R1_INSTRUCTION, R1_LETTER_INSTRUCTION, referred_entity
from dprl.eval import scoring
from dprl.eval.report import markdown_table


def _user(text: str, image: bool = True) -> dict:
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
    return {"role": "user", "content": content}


def question_text(cfg: EvalConfig, sample: Sample) -> str:
    if cfg.prompt_mode != "r1":
        return sample.question
    return sample.question + (R1_INSTRUCTION if cfg.data.task == "kvg" else R1_LETTER_INSTRUCTION)


def read_predictions(path: str) -> dict[str, dict]:
    """question_id -> prediction row; a line cut short by an interrupted run is ignored."""
    rows = {}
    if os.path.isfile(path):
        with open(path) as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                    rows[row["question_id"]] = row
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
    return rows


def _drop_partial_line(path: str) -> None:
    """Cuts a last line left unfinished by a stopped run, so appended rows start on a line."""
    if not os.path.isfile(path):
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)


def _parse_options(cfg: EvalConfig) -> dict:
    p = cfg.parse
    return dict(scope=p.scope, pick=p.pick, formats=tuple(p.formats), coords=p.coords,
                swapped=p.swapped, clamp=p.clamp)


def _score(cfg: EvalConfig, batch: list[Sample], texts: list[str]) -> list[dict]:
    if cfg.data.task == "kvg":
        return scoring.score_grounding(texts, [s.gt_boxes for s in batch], _parse_options(cfg),
                                       cfg.iou_threshold)
    return scoring.score_choice(texts, [s.answer for s in batch], cfg.parse.scope)


def _model_path(cfg: EvalConfig, ckpt: CheckpointConfig) -> str:
    if ckpt.path:
        return os.path.expanduser(ckpt.path)
    from dprl.models.tiny import make_tiny_model

    out = os.path.join(cfg.output_dir, ckpt.name, "tiny-model")
    if not os.path.isfile(os.path.join(out, "model.safetensors")):
        make_tiny_model(out, cfg.tiny)  # deterministic for cfg.tiny.seed
    return out


def infer_checkpoint(cfg: EvalConfig, ckpt: CheckpointConfig, samples: list[Sample],
                     progress: bool = True) -> list[dict]:
    """Generates and scores the samples not yet in the checkpoint's predictions file.
    Returns the samples that could not be used ({"question_id", "error"})."""
    from tqdm import tqdm

    from dprl.models.loading import load_processor

    pred_path = os.path.join(cfg.output_dir, ckpt.name, "predictions.jsonl")
    os.makedirs(os.path.dirname(pred_path), exist_ok=True)
    _drop_partial_line(pred_path)
    done = read_predictions(pred_path)
    todo = [s for s in samples if s.question_id not in done]
    if not todo:
        return []
    model_path = _model_path(cfg, ckpt)
    processor = load_processor(model_path)
    from dprl.rollout import RolloutRequest, answer_text, build_engine

    engine = build_engine(model_path, cfg.rollout, dtype=cfg.dtype)  # rollout.backend: vllm | hf
    root = cfg.data.image_root or os.path.dirname(os.path.abspath(cfg.data.path))

    def decode(completion) -> str:
        return answer_text(processor.tokenizer, completion.token_ids)

    bad = []
    bar = tqdm(total=len(todo), desc=f"eval {ckpt.name}", unit="sample", disable=not progress)
    with open(pred_path, "a") as fh:
        for start in range(0, len(todo), cfg.batch_size):
            chunk = todo[start:start + cfg.batch_size]
            batch, images = [], []
            for s in chunk:
                try:
                    images.append(open_image(s.image, root))
                    batch.append(s)
                except Exception as err:  # noqa: BLE001 - any unreadable image is a bad sample
                    bad.append({"question_id": s.question_id, "error": f"image: {err}"})
            if not batch:
                bar.update(len(chunk))
                continue
            t0 = time.perf_counter()
            conversations = [[_user(question_text(cfg, s))] for s in batch]
            described = [None] * len(batch)
            if cfg.prompt_mode == "cot2":  # turn 1: recall the named entity's features
                first = [[_user(DESCRIBE_TEMPLATE.format(entity=referred_entity(s.question)))] for s in batch]
                outs = engine.generate([RolloutRequest(m, [im]) for m, im in zip(first, images)],
                                       max_tokens=cfg.describe_max_tokens)
                described = [decode(o) for o in outs]
                conversations = [m + [{"role": "assistant", "content": d}, _user(s.question, image=False)]
                                 for m, d, s in zip(first, described, batch)]
            outs = engine.generate([RolloutRequest(m, [im]) for m, im in zip(conversations, images)])
            seconds = time.perf_counter() - t0
            texts = [decode(o) for o in outs]
            for s, o, t, sc, d in zip(batch, outs, texts, _score(cfg, batch, texts), described):
                row = {"question_id": s.question_id, "domain": s.domain, "seen": s.seen,
                       "answer": s.answer, "prediction": t, "tokens": len(o.token_ids),
                       "finish_reason": o.finish_reason} | sc
                if d is not None:
                    row["description"] = d
                fh.write(json.dumps(row) + "\n")
            fh.flush()  # a stopped run keeps every finished batch
            bar.update(len(chunk))
            bar.set_postfix(tok_s=f"{sum(len(o.token_ids) for o in outs) / max(seconds, 1e-9):.0f}")
    bar.close()
    return bad


def _infer_in_child(cfg: EvalConfig, index: int, queue) -> None:
    samples, _ = _load(cfg)
    queue.put(infer_checkpoint(cfg, cfg.checkpoints[index], samples))


def _load(cfg: EvalConfig):
    d = cfg.data
    return load_samples(d.path, d.task, d.image_root, d.domains, d.max_per_domain, d.seen_domains)


def run_eval(cfg: EvalConfig, progress: bool = True) -> dict:
    """Runs the evaluation; returns {"results": name -> metrics, "bad_samples": [...], ...}."""
    samples, bad = _load(cfg)
    os.makedirs(cfg.output_dir, exist_ok=True)
    save_config(cfg, cfg.output_dir)
    t0 = time.perf_counter()
    pending = [i for i, c in enumerate(cfg.checkpoints)
               if any(s.question_id not in read_predictions(
                   os.path.join(cfg.output_dir, c.name, "predictions.jsonl")) for s in samples)]
    for i in pending:
        if cfg.rollout.backend == "vllm" and len(pending) > 1:
            # One vLLM engine per process: each checkpoint gets a fresh one.
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            queue = ctx.Queue()
            proc = ctx.Process(target=_infer_in_child, args=(cfg, i, queue))
            proc.start()
            child_bad = queue.get()
            proc.join()
            if proc.exitcode != 0:
                raise RuntimeError(f"evaluating {cfg.checkpoints[i].name} failed (exit {proc.exitcode})")
            bad += child_bad
        else:
            bad += infer_checkpoint(cfg, cfg.checkpoints[i], samples, progress)
    infer_seconds = time.perf_counter() - t0

    bad_ids = {b["question_id"] for b in bad}
    wanted = [s for s in samples if s.question_id not in bad_ids]
    results = {}
    for c in cfg.checkpoints:
        preds = read_predictions(os.path.join(cfg.output_dir, c.name, "predictions.jsonl"))
        results[c.name] = scoring.metrics([preds[s.question_id] for s in wanted if s.question_id in preds])
    for name in cfg.baselines:
        usable = [s for s in wanted if s.record.get("candidate_boxes")]
        if cfg.data.task != "kvg" or not usable:
            raise ValueError(f"baseline {name} needs grounding samples with candidate_boxes "
                             "(the world's data has them)")
        fn = scoring.random_entity_rows if name == "random_entity" else scoring.largest_entity_rows
        results[name] = scoring.metrics(fn(usable, cfg.iou_threshold))

    with open(os.path.join(cfg.output_dir, "bad_samples.jsonl"), "w") as fh:
        for b in bad:
            fh.write(json.dumps(b) + "\n")
    metric = f"Acc@{cfg.iou_threshold:g}" if cfg.data.task == "kvg" else "FGVR accuracy"
    table = markdown_table(results, metric)
    with open(os.path.join(cfg.output_dir, "table.md"), "w") as fh:
        fh.write(table)
    summary = {"data": cfg.data.path, "task": cfg.data.task, "prompt_mode": cfg.prompt_mode,
               "backend": cfg.rollout.backend, "metric": metric, "samples": len(wanted),
               "infer_seconds": round(infer_seconds, 2), "results": results, "bad_samples": bad,
               "table": table}
    with open(os.path.join(cfg.output_dir, "metrics.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    return summary


def print_summary(summary: dict, output_dir: str) -> None:
    print()
    print(summary["table"])
    if summary["bad_samples"]:
        print(f"{len(summary['bad_samples'])} bad sample(s) skipped (see bad_samples.jsonl):")
        for b in summary["bad_samples"][:10]:
            print(f"  {b['question_id']}: {b['error']}")
    print(f"{summary['samples']} samples; inference {summary['infer_seconds']:.1f}s; "
          f"results in {output_dir}")

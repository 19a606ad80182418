"""`dprl eval`: score checkpoints on a KVG-Bench-format (or FGVR) data set, side by side.

For each checkpoint: generate answers through the rollout contract (vLLM greedy, or HF generate),
parse and score them as the batches finish, and append them to
`output_dir/<name>/predictions.jsonl`; a re-run skips the question ids already there, as long
as `identity.json` beside them shows the same model and decoding (dprl.eval.identity; else they
are moved aside and the run starts fresh). Stored answers are re-scored from their text with
the current scorer, so changing only how answers are scored regenerates nothing. Then the
metrics of every checkpoint (and of the trivial baselines) go to `metrics.json` and a Table-1
style `table.md`. Samples that cannot be used are listed in `bad_samples.jsonl` by id: found
before generation (unreadable image, an image or prompt the model cannot take) or by a batch
that failed, retried sample by sample so that only the failing samples are lost.
"""
from __future__ import annotations

import json
import os
import time

from dprl.config import CheckpointConfig, EvalConfig, save_config
from dprl.data.kvg import Sample, load_samples, open_image
from dprl.data.prompts import DESCRIBE_TEMPLATE, R1_INSTRUCTION, R1_LETTER_INSTRUCTION, referred_entity
from dprl.eval import knowledge_probe, official, scoring
from dprl.eval.child import run_in_child
from dprl.eval.identity import PROBE_FILE, check_predictions
from dprl.eval.report import markdown_table
from dprl.models.chat import user_turn

# Fields of a prediction row that scoring writes; re-scoring replaces all of them.
SCORE_FIELDS = ("pred_box", "iou", "correct", "parse_fail", "rule", "pred_letter")


def question_text(cfg: EvalConfig, sample: Sample) -> str:
    if cfg.prompt_mode != "r1":
        return sample.question
    return sample.question + (R1_INSTRUCTION if cfg.data.task == "kvg" else R1_LETTER_INSTRUCTION)


def read_predictions(path: str) -> dict[str, dict]:
    """question_id -> prediction row; a line cut short by an interrupted run is ignored."""
    return _read_keyed(path, lambda row: row["question_id"])


def _read_keyed(path: str, key) -> dict:
    """key(row) -> row for each JSON line of `path` (none if it is missing); a line cut short
    by an interrupted run, or without the key's fields, is ignored."""
    rows = {}
    if os.path.isfile(path):
        with open(path) as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                    rows[key(row)] = row
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


def _score(cfg: EvalConfig, batch: list[Sample], texts: list[str]) -> list[dict]:
    if cfg.scorer == "official":
        return official.score_official(texts, [s.gt_boxes for s in batch], cfg.iou_threshold)
    if cfg.data.task == "kvg":
        return scoring.score_grounding(texts, [s.gt_boxes for s in batch], cfg.parse,
                                       cfg.iou_threshold)
    return scoring.score_choice(texts, [s.answer for s in batch], cfg.parse.scope)


def _first_turn(cfg: EvalConfig, sample: Sample) -> list[dict]:
    if cfg.prompt_mode == "cot2":  # turn 1: recall the named entity's features
        return [user_turn(DESCRIBE_TEMPLATE.format(entity=referred_entity(sample.question)))]
    return [user_turn(question_text(cfg, sample))]


def _second_turn(first: list[dict], description: str, sample: Sample) -> list[dict]:
    return first + [{"role": "assistant", "content": description}, user_turn(sample.question, image=False)]


def _preflight(cfg: EvalConfig, processor, sample: Sample, image) -> str | None:
    """Why the sample cannot be generated (image refused, prompt too long), or None."""
    from dprl.eval.preflight import check_sample

    r = cfg.rollout
    first = _first_turn(cfg, sample)
    if cfg.prompt_mode != "cot2":
        return check_sample(processor, first, [image], r.max_tokens, r.max_model_len)
    # The second prompt holds the first, its description (up to describe_max_tokens) and the question.
    return check_sample(processor, _second_turn(first, "", sample), [image],
                        cfg.describe_max_tokens + r.max_tokens, r.max_model_len)


def _answer(cfg: EvalConfig, rollout, decode, batch: list[Sample], images: list) -> list[tuple]:
    """(completion, answer text, description or None) for each sample of one batch."""
    from dprl.rollout import RolloutRequest

    conversations = [_first_turn(cfg, s) for s in batch]
    described = [None] * len(batch)
    if cfg.prompt_mode == "cot2":
        outs = rollout.generate([RolloutRequest(m, [im]) for m, im in zip(conversations, images)],
                                max_tokens=cfg.describe_max_tokens)
        described = [decode(o) for o in outs]
        conversations = [_second_turn(m, d, s) for m, d, s in zip(conversations, described, batch)]
    outs = rollout.generate([RolloutRequest(m, [im]) for m, im in zip(conversations, images)])
    return [(o, decode(o), d) for o, d in zip(outs, described)]


def _answer_or_isolate(cfg: EvalConfig, rollout, decode, batch: list[Sample], images: list):
    """-> ([(sample, (completion, text, description))], bad samples). When the engine raises for
    the batch (vLLM rejects a whole batch for one prompt), the samples are retried one by one and
    only those that fail alone are lost. If every one of them fails, the engine is at fault, not
    the data: that raises."""
    try:
        return list(zip(batch, _answer(cfg, rollout, decode, batch, images))), []
    except Exception as err:  # noqa: BLE001 - isolated below, re-raised if nothing works
        batch_error = err
    if len(batch) == 1:
        return [], [_generate_error(batch[0], batch_error)]
    answered, bad = [], []
    for s, im in zip(batch, images):
        try:
            answered.append((s, _answer(cfg, rollout, decode, [s], [im])[0]))
        except Exception as err:  # noqa: BLE001 - recorded as this sample's error
            bad.append(_generate_error(s, err))
    if not answered:
        raise batch_error
    return answered, bad


def _generate_error(sample: Sample, err: Exception) -> dict:
    return {"question_id": sample.question_id, "error": f"generate: {type(err).__name__}: {err}"}


def infer_checkpoint(cfg: EvalConfig, ckpt: CheckpointConfig, samples: list[Sample],
                     progress: bool = True) -> list[dict]:
    """Generates and scores the samples not yet in the checkpoint's predictions file.
    Returns the samples that could not be used ({"question_id", "error"})."""
    from tqdm import tqdm

    from dprl.models.loading import load_processor, resolve_checkpoint

    pred_path = _predictions_path(cfg, ckpt)
    check_predictions(cfg, ckpt, pred_path)  # resume only this model's answers
    _drop_partial_line(pred_path)
    done = read_predictions(pred_path)
    todo = [s for s in samples if s.question_id not in done]
    probe_todo = _probe_pending(cfg, ckpt)
    if not todo and not probe_todo:
        return []
    model_path = resolve_checkpoint(ckpt.path, cfg.tiny, os.path.join(cfg.output_dir, ckpt.name))
    processor = load_processor(model_path)
    from dprl.rollout import answer_text, build_rollout_engine

    rollout = build_rollout_engine(model_path, cfg.rollout, dtype=cfg.dtype)  # rollout.backend: vllm | hf
    root = cfg.data.image_root or os.path.dirname(os.path.abspath(cfg.data.path))

    def decode(completion) -> str:
        return answer_text(processor.tokenizer, completion.token_ids)

    bad = []
    bar = tqdm(total=len(todo), desc=f"eval {ckpt.name}", unit="sample", disable=not progress or not todo)
    with open(pred_path, "a") as fh:
        for start in range(0, len(todo), cfg.batch_size):
            chunk = todo[start:start + cfg.batch_size]
            batch, images = _usable(cfg, processor, chunk, root, bad)
            if batch:
                t0 = time.perf_counter()
                answered, failed = _answer_or_isolate(cfg, rollout, decode, batch, images)
                seconds = time.perf_counter() - t0
                bad += failed
                _write_rows(cfg, fh, answered)
                tokens = sum(len(o.token_ids) for _, (o, _, _) in answered)
                bar.set_postfix(tok_s=f"{tokens / max(seconds, 1e-9):.0f}")
            bar.update(len(chunk))
    bar.close()
    if probe_todo:
        _ask_probe(cfg, ckpt, rollout, decode, probe_todo, progress)
    return bad


def _probe_items(cfg: EvalConfig) -> list:
    p = cfg.probe
    entities = knowledge_probe.load_entities(p.path, cfg.data.seen_domains)
    if p.kind == "look":
        return knowledge_probe.look_items(entities, p.question)
    return knowledge_probe.choice_items(entities, p.choices, p.seed)


def _probe_path(cfg: EvalConfig, ckpt: CheckpointConfig) -> str:
    return os.path.join(cfg.output_dir, ckpt.name, PROBE_FILE)


def _probe_answers(cfg: EvalConfig, ckpt: CheckpointConfig) -> dict[tuple, dict]:
    """(entity, question, max_tokens) -> the stored probe row (answers of other questions or
    token limits do not count for this probe)."""
    path = _probe_path(cfg, ckpt)
    _drop_partial_line(path)
    return _read_keyed(path, lambda r: (r["entity"], r["question"], r["max_tokens"]))


def _probe_pending(cfg: EvalConfig, ckpt: CheckpointConfig) -> list:
    if not cfg.probe.path:
        return []
    have = _probe_answers(cfg, ckpt)
    return [it for it in _probe_items(cfg)
            if (it.entity.name, it.question, cfg.probe.max_tokens) not in have]


def _ask_probe(cfg: EvalConfig, ckpt: CheckpointConfig, rollout, decode, items: list, progress: bool) -> None:
    """Asks the probe's text-only questions with the checkpoint's engine; appends raw answers
    (scored when the metrics are computed, like the grounding answers)."""
    from tqdm import tqdm

    from dprl.rollout import RolloutRequest

    bar = tqdm(total=len(items), desc=f"probe {ckpt.name}", unit="entity", disable=not progress)
    with open(_probe_path(cfg, ckpt), "a") as fh:
        for start in range(0, len(items), cfg.batch_size):
            chunk = items[start:start + cfg.batch_size]
            outs = rollout.generate([RolloutRequest([user_turn(it.question, image=False)]) for it in chunk],
                                    max_tokens=cfg.probe.max_tokens)
            for it, o in zip(chunk, outs):
                fh.write(json.dumps({"entity": it.entity.name, "question": it.question,
                                     "max_tokens": cfg.probe.max_tokens, "answer": decode(o)}) + "\n")
            fh.flush()
            bar.update(len(chunk))
    bar.close()


def _probe_results(cfg: EvalConfig, ckpt: CheckpointConfig, preds: list[dict], samples: list[Sample]) -> dict:
    """The probe's answers scored now, written back with their scores, and grounding accuracy
    split by whether the sample's entity is known."""
    items = _probe_items(cfg)
    have = _probe_answers(cfg, ckpt)
    answered = [(it, have[(it.entity.name, it.question, cfg.probe.max_tokens)]) for it in items
                if (it.entity.name, it.question, cfg.probe.max_tokens) in have]
    rows = knowledge_probe.probe_rows([it for it, _ in answered], [r["answer"] for _, r in answered])
    path = _probe_path(cfg, ckpt)
    with open(path + ".tmp", "w") as fh:
        fh.writelines(json.dumps(r | {"max_tokens": cfg.probe.max_tokens}) + "\n" for r in rows)
    os.replace(path + ".tmp", path)
    entity_of = {s.question_id: knowledge_probe.sample_entity(s.record, s.question) for s in samples}
    return {"probe": knowledge_probe.probe_metrics(rows),
            "grounding": knowledge_probe.grounding_by_knowledge(preds, entity_of, rows)}


def _usable(cfg: EvalConfig, processor, chunk: list[Sample], root: str, bad: list) -> tuple[list, list]:
    """(samples, their images) that pass the checks before generation; the rest go to `bad`."""
    batch, images = [], []
    for s in chunk:
        try:
            image = open_image(s.image, root)
        except Exception as err:  # noqa: BLE001 - any unreadable image is a bad sample
            bad.append({"question_id": s.question_id, "error": f"image: {err}"})
            continue
        why = _preflight(cfg, processor, s, image)
        if why:
            bad.append({"question_id": s.question_id, "error": why})
            continue
        batch.append(s)
        images.append(image)
    return batch, images


def _write_rows(cfg: EvalConfig, fh, answered: list) -> None:
    """Appends one scored row per answered sample; flushed so a stopped run keeps the batch."""
    if not answered:
        return
    scores = _score(cfg, [s for s, _ in answered], [t for _, (_, t, _) in answered])
    for (s, (o, t, d)), sc in zip(answered, scores):
        row = {"question_id": s.question_id, "domain": s.domain, "seen": s.seen,
               "answer": s.answer, "prediction": t, "tokens": len(o.token_ids),
               "finish_reason": o.finish_reason} | sc
        if d is not None:
            row["description"] = d
        fh.write(json.dumps(row) + "\n")
    fh.flush()


def _predictions_path(cfg: EvalConfig, ckpt: CheckpointConfig) -> str:
    return os.path.join(cfg.output_dir, ckpt.name, "predictions.jsonl")


def _rescored(cfg: EvalConfig, ckpt: CheckpointConfig, samples: list[Sample]) -> dict[str, dict]:
    """The checkpoint's predictions scored again from their text with the current scorer, parse
    options, threshold and ground truth (none of them changes what was generated). The file is
    rewritten when a score changed, so it always agrees with metrics.json."""
    path = _predictions_path(cfg, ckpt)
    preds = read_predictions(path)
    scored = [s for s in samples if s.question_id in preds]
    if not scored:
        return preds
    texts = [preds[s.question_id].get("prediction") or "" for s in scored]
    updated = dict(preds)
    for s, sc in zip(scored, _score(cfg, scored, texts)):
        kept = {k: v for k, v in preds[s.question_id].items() if k not in SCORE_FIELDS}
        data = {"domain": s.domain, "seen": s.seen, "answer": s.answer}  # the split may have changed
        updated[s.question_id] = json.loads(json.dumps(kept | data | sc))  # as it reads back
    if updated != preds:
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in updated.values())
        os.replace(tmp, path)
    return updated


def _infer_in_child(cfg: EvalConfig, index: int) -> list[dict]:
    samples, _ = _load(cfg)
    return infer_checkpoint(cfg, cfg.checkpoints[index], samples)


def _load(cfg: EvalConfig):
    d = cfg.data
    # The official scorer has its own seen split (a row's own `seen` field still wins).
    seen = official.SEEN_DOMAINS if cfg.scorer == "official" else d.seen_domains
    return load_samples(d.path, d.task, d.image_root, d.domains, d.max_per_domain, seen)


def run_eval(cfg: EvalConfig, progress: bool = True) -> dict:
    """Runs the evaluation; returns {"results": name -> metrics, "bad_samples": [...], ...}."""
    samples, bad = _load(cfg)
    os.makedirs(cfg.output_dir, exist_ok=True)
    save_config(cfg, cfg.output_dir)
    for c in cfg.checkpoints:  # before `pending`: predictions of another model do not count
        check_predictions(cfg, c, _predictions_path(cfg, c))
    t0 = time.perf_counter()
    wanted_ids = {s.question_id for s in samples}
    pending = [i for i, c in enumerate(cfg.checkpoints)  # each file read once, not once per sample
               if not wanted_ids <= read_predictions(_predictions_path(cfg, c)).keys()
               or _probe_pending(cfg, c)]
    for i in pending:
        if cfg.rollout.backend == "vllm" and len(pending) > 1:
            # One vLLM engine per process: each checkpoint gets a fresh one.
            bad += run_in_child(_infer_in_child, (cfg, i), f"evaluating {cfg.checkpoints[i].name}")
        else:
            bad += infer_checkpoint(cfg, cfg.checkpoints[i], samples, progress)
    infer_seconds = time.perf_counter() - t0

    bad_ids = {b["question_id"] for b in bad}
    wanted = [s for s in samples if s.question_id not in bad_ids]
    results, probe = {}, {}
    for c in cfg.checkpoints:
        preds = _rescored(cfg, c, wanted)
        rows = [preds[s.question_id] for s in wanted if s.question_id in preds]
        results[c.name] = scoring.metrics(rows)
        if cfg.probe.path:
            probe[c.name] = _probe_results(cfg, c, rows, wanted)
    for name in cfg.baselines:
        usable = [s for s in wanted if s.record.get("candidate_boxes")]
        if cfg.data.task != "kvg" or not usable:
            raise ValueError(f"baseline {name} needs grounding samples with candidate_boxes "
                             "(the world's data has them)")
        fn = scoring.random_entity_rows if name == "random_entity" else scoring.largest_entity_rows
        results[name] = scoring.metrics(fn(usable, cfg.iou_threshold))

    bad = list({(b["question_id"], b["error"]): b for b in bad}.values())  # once, not per checkpoint
    with open(os.path.join(cfg.output_dir, "bad_samples.jsonl"), "w") as fh:
        for b in bad:
            fh.write(json.dumps(b) + "\n")
    metric = f"Acc@{cfg.iou_threshold:g}" if cfg.data.task == "kvg" else "FGVR accuracy"
    if cfg.scorer == "official":
        metric += " (official KVG-Bench scorer)"
    repaired = [{"question_id": s.question_id, "boxes": s.boxes_repaired} for s in samples if s.boxes_repaired]
    table = markdown_table(results, metric)
    if probe:
        table += "\n" + knowledge_probe.markdown(probe)
    with open(os.path.join(cfg.output_dir, "table.md"), "w") as fh:
        fh.write(table)
    summary = {"data": cfg.data.path, "task": cfg.data.task, "prompt_mode": cfg.prompt_mode,
               "backend": cfg.rollout.backend, "scorer": cfg.scorer, "metric": metric,
               "samples": len(wanted), "infer_seconds": round(infer_seconds, 2), "results": results,
               "bad_samples": bad, "repaired_boxes": repaired, "table": table}
    if probe:
        summary["knowledge_probe"] = probe
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
    repaired = summary.get("repaired_boxes") or []
    if repaired:
        ids = ", ".join(r["question_id"] for r in repaired[:10]) + (", ..." if len(repaired) > 10 else "")
        print(f"{sum(r['boxes'] for r in repaired)} ground-truth box(es) in {len(repaired)} sample(s) had "
              f"x2 < x1 or y2 < y1 and were reordered (see repaired_boxes in metrics.json): {ids}")
    print(f"{summary['samples']} samples; inference {summary['infer_seconds']:.1f}s; "
          f"results in {output_dir}")

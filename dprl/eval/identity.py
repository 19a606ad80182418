"""Which model and decoding produced a checkpoint's predictions, so that a re-run resumes them
only when they are still the answers of the model being evaluated.

`identity.json` sits next to `predictions.jsonl`. It records the checkpoint's files (size and
SHA-256 of each config, tokenizer and weight file; for the tiny offline model, its config, from
which it is built deterministically) and every setting that changes what is generated (backend,
dtype, sampling, token limits, prompt mode and instruction text). Scoring settings (parse
options, scorer, IoU threshold) are not part of it: stored answers are re-scored from their text.

When the identity differs from the recorded one, the old predictions (and knowledge-probe
answers) are moved aside to `predictions.<old digest>.jsonl` (`probe.<old digest>.jsonl`),
never deleted, and the run starts fresh.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict

from dprl.config import CheckpointConfig, EvalConfig
from dprl.models.loading import TINY_RECORD

IDENTITY_FILE = "identity.json"
# Files of a checkpoint directory that decide its outputs: configs, chat template, tokenizer,
# weights, custom model code. Training logs and states beside them do not, nor the record of the
# config a tiny model was built from (its other files already say everything it decides).
MODEL_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken", ".py", ".safetensors", ".bin", ".pt", ".pth")
NOT_MODEL_FILES = {"trainer_state.json", "training_args.bin", "all_results.json",
                   "train_results.json", "eval_results.json", TINY_RECORD}
_CHUNK = 8 << 20


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def model_files(model_dir: str, previous: dict | None = None) -> dict:
    """name -> {"size", "mtime_ns", "sha256"} for the files that decide the outputs. A file whose
    size and mtime match `previous` keeps its recorded hash: a 15 GB checkpoint is read once."""
    previous = previous or {}
    files, to_hash = {}, []
    for name in sorted(os.listdir(model_dir)):
        path = os.path.join(model_dir, name)
        if not os.path.isfile(path) or name in NOT_MODEL_FILES or not name.endswith(MODEL_SUFFIXES):
            continue
        st = os.stat(path)
        old = previous.get(name, {})
        files[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns and "sha256" in old:
            files[name]["sha256"] = old["sha256"]
        else:
            to_hash.append(name)
    total = sum(files[name]["size"] for name in to_hash)
    if total > 1 << 30:  # tens of seconds: say why the run pauses
        print(f"hashing {total / 1e9:.1f} GB of {model_dir} to record which model made the predictions "
              "(once per file)")
    for name in to_hash:
        files[name]["sha256"] = _sha256(os.path.join(model_dir, name))
    return files


def generation_settings(cfg: EvalConfig) -> dict:
    """Every setting that changes the generated text (sampling knobs only when sampling)."""
    from dprl.data.prompts import DESCRIBE_TEMPLATE, R1_INSTRUCTION, R1_LETTER_INSTRUCTION

    r = cfg.rollout
    out = {"backend": r.backend, "dtype": cfg.dtype, "temperature": r.temperature,
           "max_tokens": r.max_tokens, "max_model_len": r.max_model_len, "stop": list(r.stop),
           "task": cfg.data.task, "prompt_mode": cfg.prompt_mode}
    if r.temperature > 0:
        out |= {"top_p": r.top_p, "top_k": r.top_k, "seed": r.seed}
    if cfg.prompt_mode == "r1":
        out["instruction"] = R1_INSTRUCTION if cfg.data.task == "kvg" else R1_LETTER_INSTRUCTION
    if cfg.prompt_mode == "cot2":
        out |= {"describe": DESCRIBE_TEMPLATE, "describe_max_tokens": cfg.describe_max_tokens}
    return out


def current_identity(cfg: EvalConfig, ckpt: CheckpointConfig, previous: dict | None = None) -> dict:
    """{"model": ..., "generation": ...}; `previous` (the recorded identity) saves re-hashing."""
    if ckpt.path:
        old_files = ((previous or {}).get("model") or {}).get("files")
        model = {"path": ckpt.path, "files": model_files(os.path.expanduser(ckpt.path), old_files)}
    else:
        model = {"tiny": asdict(cfg.tiny)}
    return {"model": model, "generation": generation_settings(cfg)}


def _comparable(identity: dict) -> dict:
    """What must match: file contents, not where the checkpoint lies or when it was copied."""
    model = dict(identity.get("model") or {})
    model.pop("path", None)
    if "files" in model:
        model["files"] = {k: {"size": v.get("size"), "sha256": v.get("sha256")}
                          for k, v in model["files"].items()}
    return {"model": model, "generation": identity.get("generation")}


def digest(identity: dict) -> str:
    text = json.dumps(_comparable(identity), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _difference(old: dict, new: dict) -> str:
    """A short reason naming what changed."""
    a, b = _comparable(old), _comparable(new)
    if a["model"] != b["model"]:
        fa, fb = a["model"].get("files", {}), b["model"].get("files", {})
        changed = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
        return "the model changed" + (f" ({', '.join(changed[:3])})" if changed else "")
    ga, gb = a["generation"] or {}, b["generation"] or {}
    keys = sorted(k for k in set(ga) | set(gb) if ga.get(k) != gb.get(k))
    return "the decoding settings changed (" + ", ".join(keys) + ")"


def read_identity(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, IDENTITY_FILE)) as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None


def _write_identity(folder: str, identity: dict) -> None:
    tmp = os.path.join(folder, IDENTITY_FILE + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(identity, fh, indent=2)
    os.replace(tmp, os.path.join(folder, IDENTITY_FILE))


def _set_aside(pred_path: str, tag: str) -> str:
    stem = pred_path[: -len(".jsonl")]
    aside, k = f"{stem}.{tag}.jsonl", 1
    while os.path.exists(aside):
        k += 1
        aside = f"{stem}.{tag}-{k}.jsonl"
    os.replace(pred_path, aside)
    return aside


# Answer files beside identity.json: the grounding predictions and the knowledge probe's answers.
PROBE_FILE = "probe.jsonl"


def check_predictions(cfg: EvalConfig, ckpt: CheckpointConfig, pred_path: str, log=print) -> None:
    """Makes `pred_path` (and the probe answers beside it) safe to resume: keeps them when they
    were made by this model and decoding, else moves them aside and says why in one line. Then
    records the current identity."""
    folder = os.path.dirname(pred_path)
    os.makedirs(folder, exist_ok=True)
    previous = read_identity(folder)
    identity = current_identity(cfg, ckpt, previous)
    stale = previous is None or digest(previous) != digest(identity)
    for path in (pred_path, os.path.join(folder, PROBE_FILE)):
        if stale and os.path.isfile(path) and os.path.getsize(path) > 0:
            reason = (f"no {IDENTITY_FILE} says which model wrote them" if previous is None
                      else _difference(previous, identity))
            aside = _set_aside(path, digest(previous) if previous else "unknown")
            log(f"{ckpt.name}: starting fresh, {reason}; the old answers are in {aside}")
    _write_identity(folder, identity)

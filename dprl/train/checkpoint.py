"""Checkpoints: the model in HF format (what transformers, vLLM and `dprl eval` load) and the full
training state (DeepSpeed's: weights, optimizer and LR schedule, partitioned as trained) for resume.

Layout under a run directory:
    state/<tag>/...        DeepSpeed checkpoint, one per save; state/latest names the newest
    state/trainer.json     {"step": steps done, "tag": ..., "total_steps": the run's length}, written
                           after the save completed
    final/                 HF checkpoint: config.json, model.safetensors, tokenizer, processor, and
                           trained_steps.json ({"step": ...}, written last: the export is complete)

Nothing non-finite is ever written (dprl.train.finite), and a rerun never overwrites a state or
export that is further along than it would get (`check_rerun`).
"""
from __future__ import annotations

import json
import os
import shutil

import torch

from dprl.errors import UserFacingError
from dprl.train.finite import NonFiniteError, describe_non_finite_weights, non_finite_message
from dprl.train.weight_sync import hf_name, gathered, plan_buckets

EXPORT_FILE = "trained_steps.json"


class RunStateError(UserFacingError):
    """A run directory's saved state is unreadable, or this run would overwrite a state or export
    it must not; the message says what is there and what the user can do. Nothing was changed."""


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def stop_if_non_finite(what: str, run_dir: str, step: int) -> None:
    """Raises NonFiniteError for step `step` when `what` (from dprl.train.finite's describe_*,
    which all ranks agree on) names something non-finite, telling which state is kept."""
    if what:
        info = saved_step(run_dir)
        raise NonFiniteError(non_finite_message(step, what, run_dir, info and info["step"]))


def require_finite_weights(ds_engine, run_dir: str, step: int) -> None:
    """Raises NonFiniteError on every rank if any weight is nan or inf (all ranks call it)."""
    stop_if_non_finite(describe_non_finite_weights(getattr(ds_engine, "module", ds_engine)), run_dir, step)


def full_state_dict(ds_engine, bucket_bytes: int = 512 * 2**20) -> dict[str, torch.Tensor]:
    """Every parameter whole, on CPU, on rank 0 (other ranks get {}). Collective under ZeRO-3:
    parameters are gathered a bucket of whole blocks at a time, so the extra device memory is
    about one bucket."""
    module = getattr(ds_engine, "module", ds_engine)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    out: dict[str, torch.Tensor] = {}
    for bucket in plan_buckets(list(module.named_parameters()), bucket_bytes):
        with gathered([p for _, p in bucket]):
            if rank == 0:
                for name, p in bucket:
                    out[hf_name(name)] = p.data.detach().to("cpu", copy=True)
    return out


def save_hf(ds_engine, processor, out_dir: str, step: int) -> str | None:
    """Writes the model after `step` steps as an HF checkpoint to `out_dir`, the run directory's
    final/ (rank 0 writes; all ranks call). Raises NonFiniteError, writing nothing, if a weight
    is nan or inf."""
    require_finite_weights(ds_engine, os.path.dirname(os.path.abspath(out_dir)), step)
    state = full_state_dict(ds_engine)
    rank = _rank()
    if rank == 0:
        module = getattr(ds_engine, "module", ds_engine)
        os.makedirs(out_dir, exist_ok=True)
        marker = os.path.join(out_dir, EXPORT_FILE)
        if os.path.exists(marker):  # an export interrupted from here on is not a complete one
            os.remove(marker)
        module.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
        processor.save_pretrained(out_dir)
        processor.tokenizer.save_pretrained(out_dir)
        _write_json(marker, {"step": step})
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return out_dir if rank == 0 else None


def _write_json(path: str, data: dict) -> None:
    """Writes `data` whole or not at all (a reader never sees half a file)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _prune(state_dir: str, tag: str, keep: int) -> None:
    """Deletes all but the newest `keep` saves up to `tag` (a 7B state with its Adam moments is
    ~100 GB). Never `tag` itself nor a later save: those are not this run's to delete."""
    older = sorted(d for d in os.listdir(state_dir)
                   if d.startswith("step") and d < tag and os.path.isdir(os.path.join(state_dir, d)))
    for old in older[:max(0, len(older) - (keep - 1))]:
        shutil.rmtree(os.path.join(state_dir, old))


def save_state(ds_engine, run_dir: str, step: int, keep: int = 1, total_steps: int | None = None) -> None:
    """Saves the resumable state after `step` steps of a `total_steps` run (all ranks call), then
    deletes older saves beyond the newest `keep`. Raises NonFiniteError, writing nothing, if a
    weight is nan or inf."""
    require_finite_weights(ds_engine, run_dir, step)
    state_dir = os.path.join(run_dir, "state")
    tag = f"step{step:08d}"
    ds_engine.save_checkpoint(state_dir, tag=tag, client_state={"step": step})
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    if _rank() == 0:
        # Written last: a state without this file was interrupted mid-save and is not trusted.
        _write_json(os.path.join(state_dir, "trainer.json"),
                    {"step": step, "tag": tag, "total_steps": total_steps})
        _prune(state_dir, tag, keep)


def saved_step(run_dir: str) -> dict | None:
    """{"step", "tag", ...} of the last completed save under `run_dir`, or None when there is
    none. Raises RunStateError when the pointer is unreadable or names a save that is gone
    (DeepSpeed would fail on it with a bare AssertionError)."""
    state_dir = os.path.join(run_dir, "state")
    path = os.path.join(state_dir, "trainer.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as fh:
            info = json.load(fh)
        step, tag = int(info["step"]), str(info["tag"])
    except (ValueError, KeyError, TypeError) as err:
        raise RunStateError(
            f"{path} is not a valid pointer ({err!r}); it should read like "
            f'{{"step": 4, "tag": "step00000004"}}, naming a save in {state_dir}. Fix it by hand, or '
            "start over in a new output_dir.") from None
    saved = os.path.join(state_dir, tag)
    if not os.path.isdir(saved) or not os.listdir(saved):
        raise RunStateError(
            f"{path} says the last save is step {step} in {tag}, but {saved} is missing or empty "
            "(deleted or moved?). Put that save back to resume from it; or start over in a new "
            f"output_dir (or delete {state_dir}).")
    return {**info, "step": step, "tag": tag}


def exported_step(run_dir: str) -> int | None:
    """The step of the completed export in `run_dir`/final, or None (none, interrupted, or
    written before exports recorded their step)."""
    path = os.path.join(run_dir, "final", EXPORT_FILE)
    try:
        with open(path) as fh:
            return int(json.load(fh)["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _holds(run_dir: str, info: dict | None, exported: int | None) -> str:
    """"<run_dir> already holds step 4 of 4 (finished)": what a rerun found there."""
    step = max(info["step"] if info else -1, exported if exported is not None else -1)
    if step < 0:
        return f"{run_dir} already holds an exported model in final/ (of unknown step)"
    total = info.get("total_steps") if info else None
    return (f"{run_dir} already holds step {step}" + (f" of {total}" if total else "")
            + (" (finished)" if exported == step else ""))


def check_rerun(run_dir: str, total: int, resume: bool, length_key: str) -> str | None:
    """Whether a run of `total` steps may train in `run_dir`: None when it may (fresh, or resuming
    a state short of `total`); a message when the run there is already finished and exported,
    so there is nothing to do. Raises RunStateError when training would overwrite a state or
    export it cannot reproduce. All ranks call it and read the same files; it writes nothing.

    Refusing rather than doing something is the choice that never loses data: a state past
    `total` cannot be trained back to `total`, and saving it under the earlier step (what a
    shorter rerun used to do) left a pointer to a deleted save and a run no one could resume.
    The only case that exits quietly is the same run again, finished and exported: rerunning a
    finished command (as `dprl pipeline` does) must succeed without touching its files.
    `length_key` is the config key that sets the run's length, for the message."""
    info = saved_step(run_dir)
    exported = exported_step(run_dir)
    has_final = os.path.isdir(os.path.join(run_dir, "final"))
    nothing_changed = "Nothing was changed."
    if not resume and (info or has_final):
        raise RunStateError(
            f"{_holds(run_dir, info, exported)}, and resume=false would start over in it, "
            f"overwriting that. {nothing_changed} To continue that run, set resume=true; to start "
            f"over, use a new output_dir (or delete {run_dir}/state and {run_dir}/final).")
    done = info["step"] if info else 0
    if max(done, exported or 0) > total:
        raise RunStateError(
            f"{_holds(run_dir, info, exported)}, but this run is {total} steps long: fewer than "
            "are done, and a saved state cannot be trained back to an "
            f"earlier step. {nothing_changed} To train longer, set {length_key} above "
            f"{max(done, exported or 0)}; to train a {total}-step run, use a new output_dir.")
    if exported == total and (info is None or done == total):  # state deleted after the export: ok
        return (f"{_holds(run_dir, info, exported)}: this run is already done, nothing to do. To "
                f"train longer, raise {length_key}; to start over, use a new output_dir.")
    if info is None and has_final:
        step = "unknown" if exported is None else exported
        raise RunStateError(
            f"{run_dir}/final holds an exported model (step {step}) but {run_dir}/state holds no "
            "state to resume, so this run would train from the base "
            f"model and overwrite it. {nothing_changed} To keep it, use a new output_dir; to "
            f"replace it, delete {run_dir}/final.")
    return None


def load_state(ds_engine, run_dir: str) -> int:
    """Restores weights, optimizer and schedule from the last completed save -> steps done."""
    info = saved_step(run_dir)
    if info is None:
        return 0
    path, client = ds_engine.load_checkpoint(os.path.join(run_dir, "state"), tag=info["tag"])
    if path is None:
        raise RuntimeError(f"could not load the training state {info['tag']} from {run_dir}/state")
    return int(client["step"])

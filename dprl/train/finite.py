"""Stopping a run that has gone non-finite, before it saves or exports what it made.

A learning rate that is too high makes the weights overflow within a step or two; after that the
loss may still read as a small number (GRPO's did at lr=1e4, with 27 of 58 tensors NaN), and a run
that only logs would write them all into `final/` and exit 0. The checks here are
cheap: the loss every step, the gradient norm where the step has one, and the weights once
before every save, export and weight sync (one pass over the parameters, less than the save
itself reads).

Every check is collective: ranks see different data (and under ZeRO-3 different weight shards),
so each rank's verdict is all-reduced and all ranks raise together; a rank that raised alone
would leave the others waiting in the next collective forever.
"""
from __future__ import annotations

import math

import torch

from dprl.errors import UserFacingError

LR_HINT = ("The learning rate is most likely too high for this model and data: lower trainer.lr "
           "(and keep trainer.grad_clip > 0)")


class NonFiniteError(UserFacingError):
    """Training produced nan or inf; the message says at which step, in what, and what to do."""


def collective_device() -> torch.device:
    """Where a tensor for a collective must live: nccl reduces only CUDA tensors, gloo CPU ones."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any rank (all ranks call it)."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return flag
    t = torch.tensor([int(flag)], device=collective_device())
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def describe_non_finite(values: dict[str, float | None]) -> str:
    """"loss is nan, grad norm is inf" for the entries that are not finite ('' when all are;
    None means "not measured this step" and is skipped). All ranks call it and agree."""
    local = ", ".join(f"{name} is {value}" for name, value in values.items()
                      if value is not None and not math.isfinite(value))
    if any_rank(bool(local)):
        return local or " or ".join(values) + " not finite on another rank"
    return ""


def _local_tensor(p: torch.Tensor) -> torch.Tensor:
    """This rank's values of a parameter: its shard under ZeRO-3 (the parameter itself is an
    empty placeholder there outside a gather), else the whole tensor."""
    return getattr(p, "ds_tensor", p.data)


def describe_non_finite_weights(module: torch.nn.Module, show: int = 3) -> str:
    """"27 of 58 weight tensors hold nan or inf (e.g. a, b, c)" ('' when all are finite).
    All ranks call it and agree; a rank reports the tensors of its own shard."""
    named = list(module.named_parameters())
    # One flag per tensor, read back in one transfer (not one device sync per tensor): the check
    # runs every GRPO step.
    finite = torch.stack([torch.isfinite(_local_tensor(p)).all() for _, p in named]).tolist() if named else []
    bad = [name for (name, _), ok in zip(named, finite) if not ok]
    if not any_rank(bool(bad)):
        return ""
    if not bad:
        return "weight tensors hold nan or inf (in another rank's shard)"
    more = ", ..." if len(bad) > show else ""
    return (f"{len(bad)} of {len(named)} weight tensors hold nan or inf "
            f"(e.g. {', '.join(bad[:show])}{more})")


def non_finite_message(step: int, what: str, run_dir: str, last_good: int | None) -> str:
    """The error for a run that went non-finite at optimizer step `step`."""
    if last_good is None:
        kept = "no resumable state had been saved yet, so there is nothing to keep"
    else:
        kept = f"the last good state (step {last_good}) is kept in {run_dir}/state"
    # A resume restores the optimizer with its learning rate, so the fix needs a fresh directory.
    return (f"training went non-finite at step {step}: {what}. Nothing from this step was saved "
            f"or exported; {kept}. {LR_HINT}, then start again in a new "
            "output_dir (resuming would restore the old learning rate with the optimizer state).")

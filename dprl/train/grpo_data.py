"""Which prompts a GRPO step sees, and how a grounding sample becomes a rollout request.

The order is a pure function of (shuffle seed, step, rank): a resumed run and an uninterrupted
one draw the same prompts, and each rank of a multi-process run takes a disjoint share. Prompts
the engine could not take are set aside when the file is loaded (screen_prompts), before any
order is drawn, so skipping them keeps that property.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from dprl.data.prompts import R1_INSTRUCTION  # the instruction SFT data and eval prompts use
from dprl.data.released import is_problem_solution, load_problem_solution
from dprl.data.validate import (DataError, bad_sample, image_size, prompt_length, read_json_records,
                                read_table)
from dprl.models.chat import prompt_text, user_turn
from dprl.rollout.base import RolloutRequest


def grounding_request(question: str, image) -> RolloutRequest:
    return RolloutRequest(messages=[user_turn(question + R1_INSTRUCTION)], images=[image])


# The call's own keywords (TRL's three and dprl's ground truth): a record field of the same name
# is not passed on.
RESERVED_COLUMNS = ("completions", "prompts", "completion_ids", "boxes")


def reward_columns(samples, requests, comps) -> dict[str, list]:
    """The keyword columns a reward is called with for `comps` (completions of `requests`, made
    from `samples`), one entry per completion: `prompts` (the chat messages), `completion_ids`,
    `boxes` (the ground truth as loaded and repaired) and every field of each sample's record
    (None where a record lacks it), as TRL passes a dataset's columns."""
    picked = [samples[c.prompt_index] for c in comps]
    fields = dict.fromkeys(k for s in picked for k in s.record if k not in RESERVED_COLUMNS)
    columns = {k: [s.record.get(k) for s in picked] for k in fields}
    columns.update(prompts=[requests[c.prompt_index].messages for c in comps],
                   completion_ids=[list(c.token_ids) for c in comps], boxes=[s.gt_boxes for s in picked])
    return columns


def load_prompt_samples(path: str, image_root: str = "", domains=()) -> tuple[list, list[dict]]:
    """(grounding samples, samples set aside as {"question_id", "error"}) of a GRPO data file in
    either layout, told apart by its columns: KVG-Bench's (question_id, question, image, answer,
    category: the world's files and the benchmark itself, dprl.data.kvg) or the released GRPO
    parquet's (problem, solution, image: dprl.data.released). A malformed or empty file raises a
    DataError naming it (and the line, for JSON)."""
    if path.endswith(".parquet"):
        rows = read_table(path)
        columns = rows.column_names
    else:  # read here first so that a malformed line is named; datasets would only say it failed
        rows = read_json_records(path)
        columns = sorted(set().union(*rows))
    if is_problem_solution(columns):
        samples, bad = load_problem_solution(rows, columns, path, image_root, domains)
    else:
        from dprl.data.kvg import load_samples

        try:
            samples, bad = load_samples(path, "kvg", image_root, domains)
        except ValueError as err:  # missing columns, a duplicate id, nothing usable
            raise DataError(str(err)) from None
    return samples, bad


def prompt_tokens(processor, sample, image_root: str) -> int:
    """The length of `sample`'s rollout prompt with its image expanded, as the engine counts it;
    decodes the image once (ValueError when it does not decode or cannot be resized)."""
    text = prompt_text(processor, grounding_request(sample.question, None).messages)
    return prompt_length(processor, text, [image_size(sample.image, image_root)])


def screen_prompts(samples: list, processor, image_root: str, max_prompt_tokens: int) -> tuple[list, list[dict]]:
    """(samples the rollout engine can take, samples set aside). A prompt longer than
    `max_prompt_tokens` (rollout.max_model_len - rollout.max_tokens) leaves no room for the
    completion: vLLM refuses it, and with it the whole batch of the step that drew it."""
    kept, bad = [], []
    for s in samples:
        try:
            n = prompt_tokens(processor, s, image_root)
        except (ValueError, OSError) as err:
            bad.append(bad_sample(s.question_id, str(err)))
            continue
        if n > max_prompt_tokens:
            bad.append(bad_sample(s.question_id, f"prompt is {n} tokens (image included), more than "
                                  f"rollout.max_model_len - rollout.max_tokens = {max_prompt_tokens}; "
                                  "raise rollout.max_model_len or lower rollout.max_tokens"))
            continue
        kept.append(s)
    return kept, bad


def step_indices(num_samples: int, step: int, per_rank: int, rank: int, world: int,
                 seed: int, stream: int = 0) -> list[int]:
    """Sample indices for `rank` at `step`: epochs of a seeded permutation, consumed in order.
    `stream` > 0 picks an independent order over the same samples (dynamic sampling's refills)."""
    if num_samples < 1:
        raise ValueError("no training samples")
    start = (step * world + rank) * per_rank
    out = []
    for k in range(start, start + per_rank):
        epoch, pos = divmod(k, num_samples)
        out.append(int(_permutation(seed, epoch, num_samples, stream)[pos]))
    return out


def refill_indices(num_samples: int, step: int, round_: int, count: int, per_rank: int, rank: int,
                   world: int, seed: int, max_rounds: int) -> list[int]:
    """The first `count` (<= per_rank) prompts of refill round `round_` (>= 1) of `step`: slots of
    stream 1 keyed on (step, round), so they depend on nothing a resumed run could lose."""
    if not 1 <= round_ < max_rounds or not 0 <= count <= per_rank:
        raise ValueError(f"refill round {round_} of {max_rounds}, {count} of {per_rank} prompts")
    slot = step * max_rounds + round_
    return step_indices(num_samples, slot, per_rank, rank, world, seed, stream=1)[:count]


@lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int, stream: int = 0) -> np.ndarray:
    key = [seed, epoch] if stream == 0 else [seed, epoch, stream]  # stream 0: the original order
    return np.random.default_rng(key).permutation(n)

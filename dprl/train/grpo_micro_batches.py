"""How a GRPO step's sequences are cut into rows and micro-batches.

A row (`Unit`) is a prompt with some of its completions: the whole group when prompts are
shared (dprl.train.shared_prompt), one completion otherwise. Micro-batches hold whole rows and
are cut by a budget of sequences and, optionally, of padded tokens (rows x longest row, what a
dense forward computes): rows are taken longest first, so rows of like length share a
micro-batch and padding stays small. Each micro-batch's loss is its exact share of the whole
batch's loss (dprl.train.grpo), so the update does not depend on how the batch is cut.

Under ZeRO-3 every forward gathers parameters collectively, so every rank must run the same
number of micro-batches: `equalize` splits the largest micro-batches of a rank with fewer.
"""
from __future__ import annotations

from dprl.train.shared_prompt import Unit


def plan_units(prompt_of: list[int], share_prompts: bool) -> list[Unit]:
    """Rows for sequences whose prompts are `prompt_of` (a group's sequences adjacent): one
    row per run of sequences of the same prompt, or one row per sequence."""
    units: list[Unit] = []
    for s, p in enumerate(prompt_of):
        if share_prompts and units and units[-1].prompt == p and units[-1].seqs[-1] == s - 1:
            units[-1] = Unit(p, units[-1].seqs + (s,))
        else:
            units.append(Unit(p, (s,)))
    return units


def _row_tokens(unit: Unit, prompt_len: list[int], seq_len: list[int]) -> int:
    return prompt_len[unit.prompt] + sum(seq_len[s] for s in unit.seqs)


def _split_to_fit(unit: Unit, prompt_len: list[int], seq_len: list[int], max_tokens: int,
                  max_seqs: int) -> list[Unit]:
    """A row cut into rows of at most `max_seqs` completions and `max_tokens` tokens (a single
    completion longer than the budget is a row of its own)."""
    out, cur = [], []
    for s in unit.seqs:
        if cur and (len(cur) >= max_seqs or
                    (max_tokens and prompt_len[unit.prompt] + sum(seq_len[c] for c in cur) + seq_len[s] > max_tokens)):
            out.append(Unit(unit.prompt, tuple(cur)))
            cur = []
        cur.append(s)
    out.append(Unit(unit.prompt, tuple(cur)))
    return out


def pack_micro_batches(units: list[Unit], prompt_len: list[int], seq_len: list[int], *,
                       max_seqs: int, max_tokens: int = 0, packed: bool = False) -> list[list[Unit]]:
    """Micro-batches of whole rows with at most `max_seqs` sequences and (when max_tokens > 0)
    at most `max_tokens` tokens: padded (rows x longest row), or, for rows packed back to back
    (`packed`), their sum. A row that alone exceeds a budget is split first."""
    if max_seqs < 1 or max_tokens < 0:
        raise ValueError(f"need max_seqs >= 1 and max_tokens >= 0, got {max_seqs}, {max_tokens}")
    rows = [r for u in units for r in _split_to_fit(u, prompt_len, seq_len, max_tokens, max_seqs)]
    rows.sort(key=lambda u: -_row_tokens(u, prompt_len, seq_len))  # stable: ties keep their order
    batches: list[list[Unit]] = []
    width = seqs = total = 0
    for u in rows:
        n, tokens = len(u.seqs), _row_tokens(u, prompt_len, seq_len)
        cost = total + tokens if packed else (len(batches[-1]) + 1) * width if batches else 0
        if batches and seqs + n <= max_seqs and (not max_tokens or cost <= max_tokens):
            batches[-1].append(u)
            seqs, total = seqs + n, total + tokens
        else:
            batches.append([u])
            width, seqs, total = tokens, n, tokens  # longest first: the batch's width
    return batches


def equalize(batches: list[list[Unit]], count: int) -> list[list[Unit]]:
    """`batches` split until there are `count` of them (the largest by sequences first: a
    micro-batch of several rows loses half its rows, a single row half its completions)."""
    batches = [list(b) for b in batches]
    while len(batches) < count:
        i = max(range(len(batches)), key=lambda k: sum(len(u.seqs) for u in batches[k]))
        b = batches[i]
        if len(b) > 1:
            half = len(b) // 2
            batches[i:i + 1] = [b[:half], b[half:]]
        elif len(b[0].seqs) > 1:
            u, half = b[0], len(b[0].seqs) // 2
            batches[i:i + 1] = [[Unit(u.prompt, u.seqs[:half])], [Unit(u.prompt, u.seqs[half:])]]
        else:
            raise ValueError(f"cannot cut {len(batches)} micro-batches of single sequences into {count}")
    return batches


def agreed_count(local: int) -> int:
    """The largest micro-batch count over all ranks (every rank must run as many forwards)."""
    import torch

    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return local
    t = torch.tensor([local], dtype=torch.long)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t)

"""Rows and micro-batches of a GRPO step: groups become rows, budgets are kept, every sequence is
trained on exactly once, and ranks can agree on a count."""
import itertools
import random

import pytest

from dprl.train.grpo_micro_batches import equalize, pack_micro_batches, plan_units
from dprl.train.shared_prompt import Unit


def _seqs(batches):
    return sorted(s for b in batches for u in b for s in u.seqs)


def test_groups_become_rows_or_single_completions():
    prompt_of = [0, 0, 0, 1, 1, 2]
    assert plan_units(prompt_of, True) == [Unit(0, (0, 1, 2)), Unit(1, (3, 4)), Unit(2, (5,))]
    assert plan_units(prompt_of, False) == [Unit(p, (s,)) for s, p in enumerate(prompt_of)]
    # The same prompt twice in a batch (dynamic sampling can refill it) is two rows.
    assert plan_units([0, 0, 1, 0], True) == [Unit(0, (0, 1)), Unit(1, (2,)), Unit(0, (3,))]


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("seed", range(20))
def test_budgets_hold_and_every_sequence_is_trained_once(seed, packed):
    rng = random.Random(seed)
    G, groups = rng.choice([2, 4, 8]), rng.randint(1, 6)
    prompt_len = [rng.randint(10, 40) for _ in range(groups)]
    seq_len = [rng.randint(1, 60) for _ in range(G * groups)]
    units = plan_units([s // G for s in range(G * groups)], True)
    max_seqs = rng.randint(1, G * groups)
    max_tokens = rng.choice([0, 80, 200, 1000])
    batches = pack_micro_batches(units, prompt_len, seq_len, max_seqs=max_seqs, max_tokens=max_tokens,
                                 packed=packed)
    assert _seqs(batches) == list(range(G * groups))
    for b in batches:
        rows = [prompt_len[u.prompt] + sum(seq_len[s] for s in u.seqs) for u in b]
        assert sum(len(u.seqs) for u in b) <= max_seqs
        single = len(b) == 1 and len(b[0].seqs) == 1  # one completion may exceed the budget alone
        if max_tokens and not single:
            assert (sum(rows) if packed else len(b) * max(rows)) <= max_tokens
        for u in b:  # rows never mix prompts, and keep their completions in order
            assert all(s // G == u.prompt for s in u.seqs) and list(u.seqs) == sorted(u.seqs)
    for count in {len(batches), min(len(batches) + 1, G * groups), G * groups}:
        eq = equalize(batches, count)
        assert len(eq) == count and _seqs(eq) == list(range(G * groups))


def test_longest_rows_go_first_and_like_lengths_share_a_micro_batch():
    units = [Unit(p, (2 * p, 2 * p + 1)) for p in range(4)]
    prompt_len = [10] * 4
    seq_len = [5, 5, 50, 50, 6, 6, 49, 49]
    batches = pack_micro_batches(units, prompt_len, seq_len, max_seqs=4)
    assert [[u.prompt for u in b] for b in batches] == [[1, 3], [2, 0]]


def test_equalize_cannot_invent_sequences():
    with pytest.raises(ValueError, match="single sequences"):
        equalize([[Unit(0, (0,))], [Unit(1, (1,))]], 3)
    with pytest.raises(ValueError, match="max_seqs"):
        pack_micro_batches([Unit(0, (0,))], [3], [3], max_seqs=0)


def test_all_cuts_of_a_batch_cover_it():
    units = plan_units([0, 0, 1, 1, 1, 2], True)
    for max_seqs, max_tokens in itertools.product(range(1, 7), (0, 12, 30)):
        batches = pack_micro_batches(units, [4, 5, 6], [3, 1, 4, 1, 5, 9], max_seqs=max_seqs,
                                     max_tokens=max_tokens)
        assert _seqs(batches) == list(range(6))

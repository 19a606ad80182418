"""The batch plan: ranks split each epoch without overlap, every micro-batch has grounding samples,
and any step's batches are recomputed identically (what exact resume relies on)."""
import pytest

from dprl.train.batches import BatchPlan


def _plan(rank=0, world=2, **kw):
    args = dict(num_samples=23, num_knowledge=5, micro_batch_size=2, knowledge_per_batch=1,
                grad_accum_steps=2, world_size=world, rank=rank, seed=7)
    args.update(kw)
    return BatchPlan(**args)


def test_an_epoch_is_split_across_ranks_without_overlap():
    plans = [_plan(rank=r) for r in range(2)]
    assert plans[0].steps_per_epoch == 23 // 8 == 2
    seen = []
    for step in range(2):
        for micro in range(2):
            for p in plans:
                g, k = p.micro_batch(step, micro)
                assert len(g) == 2 and len(k) == 1
                seen += g
    assert len(seen) == len(set(seen)) == 16 and set(seen) <= set(range(23))


def test_epochs_reshuffle_and_knowledge_cycles_through_the_corpus():
    p = _plan(world=1, rank=0, num_knowledge=3)
    e0 = [p.micro_batch(s, m)[0] for s in range(p.steps_per_epoch) for m in range(2)]
    e1 = [p.micro_batch(s, m)[0] for s in range(p.steps_per_epoch, 2 * p.steps_per_epoch) for m in range(2)]
    assert e0 != e1
    knowledge = [p.micro_batch(s, m)[1][0] for s in range(3) for m in range(2)]  # 6 draws, 2 passes
    assert sorted(knowledge[:3]) == sorted(knowledge[3:]) == [0, 1, 2]


def test_plan_is_a_pure_function_of_step():
    a, b = _plan(), _plan()
    assert [a.micro_batch(5, 1)] * 2 == [b.micro_batch(5, 1), a.micro_batch(5, 1)]
    assert _plan(seed=8).micro_batch(0, 0) != a.micro_batch(0, 0)


def test_too_little_data_is_an_error():
    with pytest.raises(ValueError, match="fewer than one optimizer step"):
        _plan(num_samples=7)
    with pytest.raises(ValueError, match="knowledge"):
        _plan(num_knowledge=0)


def test_knowledge_pictures_follow_the_share_and_resume_identically():
    p = _plan(knowledge_per_batch=3)
    assert all(x is None for s in range(20) for x in p.pictures(s, 0, 0.0))
    full = [x for s in range(20) for m in range(2) for x in p.pictures(s, m, 1.0)]
    assert all(x is not None and 0 <= x < 23 for x in full) and len(set(full)) > 10
    half = [x for s in range(200) for x in p.pictures(s, 1, 0.5)]
    assert 0.4 < sum(x is not None for x in half) / len(half) < 0.6
    # a pure function of (seed, step, micro, rank): what exact resume relies on
    assert _plan(knowledge_per_batch=3).pictures(9, 1, 0.5) == p.pictures(9, 1, 0.5)
    assert p.pictures(9, 1, 1.0) != p.pictures(10, 1, 1.0)
    assert _plan(rank=1, knowledge_per_batch=3).pictures(9, 1, 1.0) != p.pictures(9, 1, 1.0)

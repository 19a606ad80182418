"""Bucket planning, name mapping and the sync loop, against a recording engine (no vLLM)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dprl.config import WeightSyncConfig
from dprl.rollout.base import RolloutEngine
from dprl.train.weight_sync import hf_name, fusion_group, params_to_sync, plan_buckets, sync_weights


class Recorder(RolloutEngine):
    """Keeps every update call; the contract's other methods only count."""

    def __init__(self):
        self.calls, self.woken, self.weights_version = [], 0, 0

    def generate(self, requests, seed=None):
        raise NotImplementedError

    def logprobs_of(self, request, completion_ids):
        raise NotImplementedError

    def update_weights(self, named_tensors, final=True):
        self.calls.append(([(n, t.clone()) for n, t in named_tensors], final))
        self.weights_version += int(final)

    def wake_up(self):
        self.woken += 1


class TinyVL(torch.nn.Module):
    """Parameter names shaped like transformers-5 Qwen2-VL."""

    def __init__(self, layers=3, d=8):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.visual = torch.nn.Module()
        self.model.visual.blocks = torch.nn.ModuleList([torch.nn.Linear(d, d) for _ in range(2)])
        lm = self.model.language_model = torch.nn.Module()
        lm.embed_tokens = torch.nn.Embedding(32, d)
        lm.layers = torch.nn.ModuleList()
        for _ in range(layers):
            block = torch.nn.Module()
            block.self_attn = torch.nn.Module()
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(block.self_attn, proj, torch.nn.Linear(d, d, bias=proj != "o_proj"))
            block.mlp = torch.nn.Module()
            for proj in ("gate_proj", "up_proj", "down_proj"):
                setattr(block.mlp, proj, torch.nn.Linear(d, d, bias=False))
            lm.layers.append(block)
        lm.norm = torch.nn.LayerNorm(d)
        self.lm_head = torch.nn.Linear(d, 32, bias=False)


def test_hf_name_strips_wrappers_only():
    assert hf_name("module.model.language_model.layers.0.mlp.up_proj.weight") == \
        "model.language_model.layers.0.mlp.up_proj.weight"
    assert hf_name("module._orig_mod.lm_head.weight") == "lm_head.weight"
    assert hf_name("base_model.model.model.language_model.norm.weight") == "model.language_model.norm.weight"
    assert hf_name("model.language_model.layers.2._checkpoint_wrapped_module.self_attn.q_proj.bias") == \
        "model.language_model.layers.2.self_attn.q_proj.bias"
    assert hf_name("model.visual.blocks.0.attn.qkv.weight") == "model.visual.blocks.0.attn.qkv.weight"


def test_fusion_groups():
    assert fusion_group("model.language_model.layers.11.self_attn.k_proj.bias") == "model.language_model.layers.11"
    assert fusion_group("model.visual.blocks.3.attn.qkv.weight") == "model.visual.blocks.3"
    assert fusion_group("model.visual.merger.mlp.0.bias") == "model.visual.merger.mlp.0"
    assert fusion_group("lm_head.weight") == "lm_head"


@settings(max_examples=40, deadline=None)
@given(layers=st.integers(1, 5), bucket_bytes=st.integers(1, 20_000))
def test_buckets_keep_blocks_whole_and_cover_everything_once(layers, bucket_bytes):
    named = list(TinyVL(layers).named_parameters())
    buckets = plan_buckets(named, bucket_bytes)
    flat = [n for b in buckets for n, _ in b]
    assert flat == [n for n, _ in named]  # every tensor exactly once, order kept
    owner = {}
    for k, bucket in enumerate(buckets):
        size = sum(p.numel() * p.element_size() for _, p in bucket)
        groups = {fusion_group(n) for n, _ in bucket}
        for g in groups:
            assert owner.setdefault(g, k) == k, f"{g} split over buckets"
        # Over budget only when a single group alone exceeds it.
        assert size <= bucket_bytes or len(groups) == 1


def test_sync_sends_trainable_tensors_in_whole_blocks_and_finalises_once():
    model = TinyVL(layers=3)
    for n, p in model.named_parameters():
        p.requires_grad_(".visual." not in n)
    rollout = Recorder()
    layer_bytes = sum(p.numel() * 4 for p in model.model.language_model.layers[0].parameters())
    stats = sync_weights(model, rollout, WeightSyncConfig(bucket_mb=1.5 * layer_bytes / 2**20))
    assert rollout.woken == 1  # woken before loading
    assert [final for _, final in rollout.calls] == [False] * (len(rollout.calls) - 1) + [True]
    assert stats["sync/buckets"] == len(rollout.calls) >= 5  # embed, 3 layers, norm + lm_head
    sent = dict(kv for call, _ in rollout.calls for kv in call)
    expected = {n: p for n, p in model.named_parameters() if ".visual." not in n}
    assert sent.keys() == expected.keys()
    for n, p in expected.items():
        assert torch.equal(sent[n], p.detach())
    for call, _ in rollout.calls:  # q, k, v (and gate, up) of a layer travel together
        names = {n for n, _ in call}
        for n in names:
            if n.endswith("q_proj.weight"):
                assert {n.replace("q_proj", "k_proj"), n.replace("q_proj", "v_proj")} <= names
            if n.endswith("gate_proj.weight"):
                assert n.replace("gate_proj", "up_proj") in names
    assert stats["sync/bytes"] == sum(p.numel() * 4 for p in expected.values())
    assert rollout.weights_version == 1


def test_sync_all_includes_frozen_vision_and_unwraps_module():
    model = TinyVL(layers=1)
    for n, p in model.named_parameters():
        p.requires_grad_(".visual." not in n)
    wrapper = torch.nn.Module()
    wrapper.module = model  # what a DeepSpeed engine looks like from here
    assert len(params_to_sync(wrapper, trainable_only=False)) == len(list(model.parameters()))
    rollout = Recorder()
    sync_weights(wrapper, rollout, WeightSyncConfig(bucket_mb=64, trainable_only=False))
    assert len(rollout.calls) == 1
    assert any(n.startswith("model.visual.blocks.") for n, _ in rollout.calls[0][0])


def test_sync_with_nothing_to_send_still_finalises():
    rollout = Recorder()
    stats = sync_weights(torch.nn.Linear(2, 2), rollout, named=[])
    assert rollout.calls == [([], True)] and stats["sync/buckets"] == 0

"""Model FLOP accounting: attention pairs equal the group mask's allowed pairs, and the linear
parameter count equals the tiny model's own decoder projections."""
import torch

from dprl.models.loading import load_model
from dprl.train.flops import TextModelShape, attention_pairs, forward_flops
from dprl.train.shared_prompt import group_attention_mask


def test_attention_pairs_count_the_group_mask():
    P, Ts = 5, [3, 1, 4]
    seg = torch.tensor([[0] * P + sum(([j] * t for j, t in enumerate(Ts, start=1)), [])])
    assert attention_pairs(P, Ts) == int(group_attention_mask(seg).sum())


def test_linear_parameters_match_the_model(tiny_model_factory):
    model = load_model(tiny_model_factory("qwen2_5_vl"))
    shape = TextModelShape.from_config(model.config)
    layers = model.model.language_model.layers
    linear = sum(m.weight.numel() for m in layers[0].modules() if isinstance(m, torch.nn.Linear))
    assert shape.layers == len(layers) and shape.linear_params_per_layer == linear
    assert shape.vocab == model.lm_head.weight.shape[0]
    # A forward is 2 FLOPs per weight per token, plus attention and the head.
    assert forward_flops(shape, 10, 0, 0) == 2 * linear * len(layers) * 10

"""Named rewards, weighted sums, the fn(completions, **columns) contract and the config section."""
import numpy as np
import pytest

from dprl.config import ConfigError, RewardConfig, load_config
from dprl.rewards import RewardFunction, from_config, register_reward, reward_fn
from dprl.rewards.backend import NativeBackend

GT = [100, 100, 300, 300]
COMPLETIONS = [
    "<think>plane</think><answer><|box_start|>(100,100),(300,300)<|box_end|></answer>",  # IoU 1
    "<think>p</think><answer>[100, 100, 300, 320]</answer>",  # IoU 40000/44000 = 0.909
    "<think>p</think><answer>[100, 100, 300, 400]</answer>",  # IoU 40000/60000 = 0.667
    "<answer>[0.1, 0.1, 0.3, 0.3]</answer>",  # fractions -> IoU 1, but no <think>
    "<think>p</think><answer>no idea</answer>",  # format only
    "garbage \xff",  # nothing
]
IOU = np.array([1.0, 40000 / 44000, 40000 / 60000, 1.0, 0.0, 0.0], dtype=np.float32)


@pytest.mark.parametrize("name,expected", [
    ("format", [1.0, 1.0, 1.0, 0.5, 0.5, 0.0]),
    ("iou", IOU),
    ("iou_threshold", np.where(IOU >= 0.8, IOU, 0)),  # tau 0.8 by default
    ("iou_threshold@0.6", IOU),
    ("iou_squared", IOU * IOU),
    ("acc", [1, 1, 1, 1, 0, 0]),  # tau 0.5 by default
    ("acc@0.95", [1, 0, 0, 1, 0, 0]),
])
def test_builtin_rewards(name, expected, use_native):
    got = reward_fn(name, use_native=use_native)(COMPLETIONS, boxes=[GT] * len(COMPLETIONS))
    assert isinstance(got, list) and all(isinstance(x, float) for x in got)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_reference_path_never_calls_the_extension(monkeypatch):
    """use_native=False must score with the Python reference alone (the fallback when dprl._C
    is not built): every C++ entry point is made to fail."""
    def boom(name):
        def call(*args, **kwargs):
            raise AssertionError(f"dprl._C.{name} called with use_native=False")
        return call

    for name in ("analyze", "parse_letters", "box_iou", "best_iou_ragged", "score_batch"):
        monkeypatch.setattr(NativeBackend, name, boom(name))
    fn = RewardFunction([("format", 1.0), ("iou_threshold", 1.0), ("acc", 0.5)], use_native=False)
    total, _ = fn.score(COMPLETIONS, boxes=[GT] * len(COMPLETIONS))
    np.testing.assert_allclose(total, [2.5, 2.409091, 1.5, 2.0, 0.5, 0.0], rtol=1e-6)


def test_weighted_sum_and_components():
    fn = RewardFunction([("format", 0.5), ("iou_threshold", 2.0)])
    total, parts = fn.score(COMPLETIONS, boxes=[GT] * 6)
    np.testing.assert_allclose(parts["format"], [1, 1, 1, 0.5, 0.5, 0])
    np.testing.assert_allclose(total, 0.5 * parts["format"] + 2.0 * parts["iou_threshold@0.8"],
                               rtol=1e-6)


def test_solution_column_and_several_gt_boxes():
    solution = ["<|box_start|>(100,100),(300,300)<|box_end|>"] * 2
    got = reward_fn("iou")(COMPLETIONS[:2], solution=solution)
    np.testing.assert_allclose(got, IOU[:2], rtol=1e-6)
    several = [[[0, 0, 10, 10], GT], []]
    np.testing.assert_allclose(reward_fn("iou")(COMPLETIONS[:2], boxes=several), [1.0, 0.0])


def test_chat_message_completions():
    chat = [[{"role": "assistant", "content": c}] for c in COMPLETIONS[:2]]
    np.testing.assert_allclose(reward_fn("iou")(chat, boxes=[GT, GT]), IOU[:2], rtol=1e-6)


def test_mc_letter():
    texts = ["<think>x</think><answer>B</answer>", "<answer>(c)</answer>", "<answer>A</answer>",
             "<answer>Boeing</answer>"]
    got = reward_fn("mc_letter")(texts, answer=["B", 2, "b", "B"])
    assert got == [1.0, 1.0, 0.0, 0.0]


def test_custom_reward_contract():
    seen = {}

    def length_penalty(completions, **columns):
        seen.update(columns)
        return [-len(c) / 100 for c in completions]

    register_reward("length_penalty_test", length_penalty)
    fn = RewardFunction([("iou", 1.0), ("length_penalty_test", 0.5)])
    got = fn(["<answer>[0,0,10,10]</answer>"], boxes=[[0, 0, 10, 10]], split=["train"])
    assert got == pytest.approx([1.0 - 0.5 * 28 / 100])
    assert seen["split"] == ["train"]

    register_reward("bad_shape_test", lambda completions, **c: [0.0])
    with pytest.raises(ValueError, match="one float per completion"):
        RewardFunction(["bad_shape_test"])(["a", "b"])
    register_reward("nan_test", lambda completions, **c: [float("nan")] * len(completions))
    assert RewardFunction(["nan_test"])(["a"]) == [0.0]


def test_a_reward_written_for_trl_runs_unchanged():
    # TRL's documented contract: keyword arguments prompts, completions, completion_ids and every
    # dataset column; the function must be callable as TRL calls it (keywords only).
    def short_and_on_topic(prompts, completions, completion_ids, domain, **kwargs):
        assert len(prompts) == len(completions) == len(completion_ids) == len(domain)
        return [1.0 / len(ids) if d in p[0]["content"] else 0.0
                for p, ids, d in zip(prompts, completion_ids, domain)]

    register_reward("trl_contract_test", short_and_on_topic)
    fn = RewardFunction([("trl_contract_test", 1.0), ("format", 0.0)])
    prompts = [[{"role": "user", "content": "Find the bird"}], [{"role": "user", "content": "Find the car"}]]
    got = fn(["a", "b"], prompts=prompts, completion_ids=[[1, 2], [3, 4, 5, 6]], domain=["bird", "dog"],
             boxes=[[0, 0, 1, 1]] * 2)
    assert got == pytest.approx([0.5, 0.0])


def test_unknown_names_and_bad_terms_raise():
    with pytest.raises(ValueError, match="unknown reward 'iou_treshold'"):
        reward_fn("iou_treshold")
    with pytest.raises(ValueError, match="takes no threshold"):
        reward_fn("iou_squared@0.5")
    with pytest.raises(ValueError, match=r"tau must be in \[0, 1\]"):
        reward_fn("acc@1.5")
    with pytest.raises(KeyError, match="boxes"):
        reward_fn("iou")(["x"])
    with pytest.raises(ValueError, match="built-in"):
        register_reward("iou", lambda c, **k: [0.0])


def test_reward_config_loads_and_validates(tmp_path):
    cfg = load_config(RewardConfig)
    assert [(t.name, t.weight, t.tau) for t in cfg.functions] == [("format", 1.0, None),
                                                                   ("iou_threshold", 1.0, 0.8)]
    path = tmp_path / "r.yaml"
    path.write_text("functions:\n  - {name: iou_squared, weight: 2.0}\n  - {name: acc@0.5, weight: 0}\n"
                    "parse:\n  scope: anywhere\n  formats: [list]\n")
    cfg = load_config(RewardConfig, str(path), ["parse.pick=first"])
    fn = from_config(cfg)
    assert fn.options.scope == "anywhere" and fn.options.pick == "first"
    assert fn.options.formats == ("list",)
    np.testing.assert_allclose(fn(["[0,0,10,10] [5,5,6,6]"], boxes=[[0, 0, 10, 10]]), [2.0])
    with pytest.raises(ConfigError, match=r"functions\[0\]\.tau"):
        load_config(RewardConfig, None, ["functions=[{name: acc, tau: 2}]"])
    with pytest.raises(ConfigError, match=r"parse\.coords"):
        load_config(RewardConfig, None, ["parse.coords=percent"])
    with pytest.raises(ConfigError, match="functions"):
        load_config(RewardConfig, None, ["functions=[]"])
    with pytest.raises(ConfigError, match=r"functions\[0\]\.name"):
        load_config(RewardConfig, None, ["functions=[{name: 'acc@x'}]"])

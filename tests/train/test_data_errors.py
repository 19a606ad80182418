"""Clear errors instead of tracebacks: a malformed line, an empty file, an unknown reward, a
missing data file or checkpoint, an output directory that cannot be written. Each fails naming
what was wrong, and the config-level ones fail before any model is built."""
import errno
import json
import os

import pytest

from cli_runner import run_cli
from dprl.config import ConfigError, GRPOConfig, SFTConfig, load_config


def _toy_rows(toy_data, n):
    rows = [json.loads(line) for line in open(toy_data["train"])]
    out = []
    for i in range(n):  # the toy rows over and over, with their images made absolute
        r = rows[i % len(rows)]
        out.append(dict(r, question_id=f"q{i + 1}", image=os.path.join(toy_data["root"], r["image"])))
    return out


def _malformed(toy_data, tmp_path) -> str:
    """100 good lines but line 79, which is cut off in the middle of its object."""
    lines = [json.dumps(r) for r in _toy_rows(toy_data, 100)]
    lines[78] = lines[78][:40]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _grpo_cfg(path, out="runs/unused", *extra):
    return load_config(GRPOConfig, None, [f"data.path={path}", f"output_dir={out}", *extra])


def test_malformed_line_is_named_by_file_and_number(toy_data, tmp_path):
    from dprl.data.sft import load_grounding
    from dprl.train.grpo import load_prompts

    path = _malformed(toy_data, tmp_path)
    with pytest.raises(ValueError, match=r"train\.jsonl' line 79: not valid JSON"):
        load_grounding(path)
    with pytest.raises(ValueError, match=r"train\.jsonl' line 79: not valid JSON"):
        load_prompts(_grpo_cfg(path))
    # A JSON list (the released SFT layout) names the line too.
    listed = tmp_path / "train.json"
    listed.write_text('[\n{"messages": [], "images": []},\n{"messages": [}\n]\n')
    with pytest.raises(ValueError, match=r"train\.json' line 3 column"):
        load_grounding(str(listed))


@pytest.mark.parametrize("name, content", [("train.jsonl", ""), ("train.jsonl", "\n\n"), ("train.json", "[]"),
                                           ("train.parquet", "")],
                         ids=["empty", "blank_lines", "empty_list", "empty_parquet"])
def test_empty_file_says_it_has_no_samples(tmp_path, name, content):
    from dprl.data.sft import load_grounding, load_knowledge
    from dprl.train.grpo import load_prompts

    path = tmp_path / name
    path.write_text(content)
    for load in (load_grounding, load_knowledge, lambda p: load_prompts(_grpo_cfg(p))):
        with pytest.raises(ValueError, match=rf"{name}' has no samples"):
            load(str(path))


def test_parquet_that_is_no_parquet_is_named(tmp_path):
    from dprl.data.sft import load_grounding
    from dprl.train.grpo import load_prompts

    path = tmp_path / "train.parquet"
    path.write_text("question_id,question\nq1,where?\n")
    for load in (load_grounding, lambda p: load_prompts(_grpo_cfg(p))):
        with pytest.raises(ValueError, match=r"train\.parquet' is not a readable parquet file"):
            load(str(path))


def test_malformed_file_fails_the_command_in_one_line(toy_data, tmp_path, tiny_model_dir):
    res = run_cli("sft", "--config", "configs/sft_tiny.yaml", f"output_dir={tmp_path / 'run'}",
                  f"data.train_path={_malformed(toy_data, tmp_path)}", f"model.path={tiny_model_dir}",
                  "data.knowledge_per_batch=0", "data.knowledge_path=")
    assert res.returncode == 2, res.stderr[-3000:]
    assert "line 79: not valid JSON" in res.stderr and "Traceback" not in res.stderr, res.stderr[-3000:]


def test_unknown_reward_name_fails_at_config_load():
    with pytest.raises(ConfigError, match=r"^reward\.functions\[1\]\.name: .*iou_threshold.*got 'iou_treshold'"):
        load_config(GRPOConfig, None, ["reward.functions=[{name: format}, {name: iou_treshold}]"])
    cfg = load_config(GRPOConfig, None, ["reward.functions=[{name: acc@0.5}, {name: iou_threshold, tau: 0.65}]"])
    assert [f.name for f in cfg.reward.functions] == ["acc@0.5", "iou_threshold"]


def test_registered_reward_name_passes_the_check():
    from dprl.rewards import register_reward

    try:
        register_reward("length_penalty_for_config_test", lambda completions, **_: [0.0] * len(completions))
    except ValueError:
        pass  # registered by an earlier run of this test in the same process
    load_config(GRPOConfig, None, ["reward.functions=[{name: length_penalty_for_config_test}]"])


@pytest.mark.parametrize("cls", [SFTConfig, GRPOConfig])
def test_model_path_without_config_json_fails_at_config_load(tmp_path, cls):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"^model\.path: .*config\.json"):
        load_config(cls, None, [f"model.path={tmp_path}"])


def test_missing_data_file_fails_before_anything_loads(toy_data, tmp_path):
    from dprl.train.grpo import GRPOTrainer
    from dprl.train.sft import run_sft

    missing = tmp_path / "nowhere" / "train.jsonl"
    out = tmp_path / "sft"
    with pytest.raises(ConfigError, match=r"^data\.train_path: expected an existing data file.*nowhere"):
        run_sft(load_config(SFTConfig, None, [f"output_dir={out}", f"data.train_path={missing}"]))
    assert not (out / "tiny-model").exists()  # the tiny model was not even built
    with pytest.raises(ConfigError, match=r"^data\.knowledge_path: expected an existing data file"):
        run_sft(load_config(SFTConfig, None, [f"output_dir={out}", f"data.train_path={toy_data['train']}",
                                              f"data.knowledge_path={missing}",
                                              "data.knowledge_per_batch=1"]))
    out = tmp_path / "grpo"
    with pytest.raises(ConfigError, match=r"^data\.path: expected an existing data file.*nowhere"):
        GRPOTrainer(_grpo_cfg(missing, out))
    assert not (out / "tiny-model").exists()


WRITE_ERRORS = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.ENOSPC: "no space left on the device"}


def _refuse_writes(monkeypatch, code):
    """Every directory made from here on fails as a read-only mount, a directory of another user
    or a full disk would make it fail (tests run as root, where chmod stops nothing)."""
    def refuse(path, *a, **k):
        raise OSError(code, os.strerror(code), path)

    monkeypatch.setattr(os, "makedirs", refuse)


@pytest.mark.parametrize("code", list(WRITE_ERRORS), ids=[errno.errorcode[c] for c in WRITE_ERRORS])
def test_unwritable_output_dir_is_said_plainly_before_anything_loads(toy_data, tmp_path, monkeypatch, code):
    from dprl.train.sft import run_sft

    out = tmp_path / "run"
    cfg = load_config(SFTConfig, None, [f"output_dir={out}", f"data.train_path={toy_data['train']}"])
    _refuse_writes(monkeypatch, code)
    with pytest.raises(ConfigError, match=rf"^output_dir: {str(out)!r} .*{WRITE_ERRORS[code]}"):
        run_sft(cfg)


def test_grpo_unwritable_output_dir_is_said_plainly(toy_data, tmp_path, monkeypatch):
    from dprl.train.grpo import GRPOTrainer

    cfg = _grpo_cfg(toy_data["train"], tmp_path / "run")
    _refuse_writes(monkeypatch, errno.ENOSPC)
    with pytest.raises(ConfigError, match=r"^output_dir: .*no space left on the device"):
        GRPOTrainer(cfg)


def test_full_disk_found_by_the_write_check(tmp_path, monkeypatch):
    """The directory exists and opens for writing; the disk refuses the first block."""
    from dprl.train.writable import check_writable

    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ConfigError, match="no space left on the device"):
        check_writable(str(tmp_path / "run"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert os.listdir(tmp_path / "run") == []  # the probe does not stay behind
    check_writable(str(tmp_path / "run"))
    assert os.listdir(tmp_path / "run") == []

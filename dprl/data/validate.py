"""Reading data files with errors that name the line, screening samples before a run draws them,
and the report of the samples set aside.

A sample that cannot be encoded (an image that does not decode, an aspect ratio Qwen2-VL's
image processor refuses, a prompt longer than the run allows) would crash a run the moment it is
drawn, and again at the same step on every rerun. Each stage screens its samples when it loads
them, before the order of samples is computed: the order stays a pure function of (seed, step)
over the usable samples, so a resumed run draws exactly what an uninterrupted one would. Samples
set aside are listed in `<output_dir>/bad_samples.jsonl` as {"question_id", "error"}.
"""
from __future__ import annotations

import io
import json
import os

from dprl.config import ConfigError
from dprl.data.kvg import image_source, undecoded

# Qwen2-VL's smart_resize (transformers, image_processing_qwen2_vl.py) raises for a long side more
# than 200 times the short side; Qwen2.5-VL uses the same function.
MAX_ASPECT_RATIO = 200
DATA_SUFFIXES = (".jsonl", ".json", ".parquet")


class DataError(ConfigError):
    """A data file the config names cannot be used at all (missing, empty, malformed, or no usable
    sample). A ConfigError, so `dprl <stage>` prints it in one line instead of a traceback."""


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def check_data_file(path: str, key: str) -> None:
    """Fails before anything loads when the file a config key names is not there."""
    if not os.path.isfile(path):
        what = "a directory" if os.path.isdir(path) else "no such file"
        raise ConfigError(f"{key}: expected an existing data file ({', '.join(DATA_SUFFIXES)}), "
                          f"got {path!r} ({what})")


def read_json_records(path: str) -> list[dict]:
    """The records of a JSON Lines file (one object per line) or of a JSON file holding a list of
    objects. A line that is not a JSON object, or an empty file, raises a DataError naming the file
    and the line (datasets' json loader says only "An error occurred while generating the dataset")."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if text.lstrip().startswith("["):
        records = _json_list(path, text)
    else:
        records = _json_lines(path, text)
    if not records:
        raise DataError(f"{path!r} has no samples (the file is empty)")
    return records


def _json_list(path: str, text: str) -> list[dict]:
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path!r} line {err.lineno} column {err.colno}: not valid JSON ({err.msg})") from None
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise DataError(f"{path!r}: item {i} of the list is {type(r).__name__}, expected a JSON "
                            "object (one sample)")
    return records


def _json_lines(path: str, text: str) -> list[dict]:
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path!r} line {lineno}: not valid JSON ({err.msg} at column {err.colno}); "
                            "a .jsonl file holds one JSON object per line") from None
        if not isinstance(r, dict):
            raise DataError(f"{path!r} line {lineno}: expected a JSON object (one sample), got "
                            f"{type(r).__name__}")
        records.append(r)
    return records


def read_table(path: str):
    """A parquet file as a `datasets.Dataset` whose image columns stay undecoded ({"bytes", "path"}
    dicts): iterating must not decode every picture, nor die on the first one that is corrupt."""
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError

    if os.path.getsize(path) == 0:
        raise DataError(f"{path!r} has no samples (the file is empty)")
    try:
        rows = load_dataset("parquet", data_files={"train": path}, split="train")
    except (ValueError, DatasetGenerationError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path!r} is not a readable parquet file ({err})") from None
    rows = undecoded(rows)
    if len(rows) == 0:
        raise DataError(f"{path!r} has no samples (0 rows)")
    return rows


# ---------------------------------------------------------------------------------------------
# Images and prompt lengths
# ---------------------------------------------------------------------------------------------
def image_size(image, image_root: str = "") -> tuple[int, int]:
    """(width, height) of a path / {"bytes", "path"} dict / PIL image, after decoding all of it
    (a truncated file fails only when its pixels are read). JPEGs decode at 1/8 scale: the whole
    stream is still read, at a fraction of the cost. Raises ValueError or OSError with the reason."""
    from PIL import Image

    opened = hasattr(image, "load")  # a PIL image already
    source = image if opened else image_source(image, image_root)
    try:
        if opened:
            image.load()
            return image.size
        with Image.open(source) as im:
            size = im.size
            im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))  # a no-op but for JPEG
            im.load()
        return size
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError... for a broken file
        where = source if isinstance(source, str) else "(embedded bytes)"
        raise ValueError(f"image {where!r} does not decode ({type(err).__name__}: {err})") from None


def image_tokens(processor, width: int, height: int) -> int:
    """The <|image_pad|> tokens the processor expands an image of this size to."""
    ratio = max(width, height) / max(1, min(width, height))
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(f"image is {width}x{height}, aspect ratio {ratio:.0f}:1; Qwen2-VL's image "
                         f"processor refuses more than {MAX_ASPECT_RATIO}:1")
    ip = processor.image_processor
    return ip.get_number_of_image_patches(height, width, {}) // ip.merge_size ** 2


def prompt_length(processor, text: str, image_sizes: list[tuple[int, int]]) -> int:
    """Tokens of a chat-templated prompt once the processor has expanded each <|image_pad|>
    (tokenising the text only: no pixels are processed)."""
    tok = processor.tokenizer
    ids = tok(text)["input_ids"]
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    n_pads = ids.count(pad)
    if n_pads != len(image_sizes):
        raise ValueError(f"the prompt has {n_pads} image placeholder(s) for {len(image_sizes)} image(s)")
    return len(ids) - n_pads + sum(image_tokens(processor, w, h) for w, h in image_sizes)


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------
def bad_sample(sample_id: str, error: str) -> dict:
    return {"question_id": sample_id, "error": error}


def report_bad_samples(stage: str, bad: list[dict], kept: int, output_dir: str, enabled: bool = True) -> str:
    """Writes `<output_dir>/bad_samples.jsonl` (empty when none were set aside, so a run directory
    always says) and prints one line when there are some. -> the file's path."""
    path = os.path.join(output_dir, "bad_samples.jsonl")
    if not enabled:
        return path
    os.makedirs(output_dir, exist_ok=True)
    with open(path, "w") as fh:
        fh.writelines(json.dumps(b) + "\n" for b in bad)
    if bad:
        first = bad[0]
        print(f"{stage}: {len(bad)} bad sample(s) skipped, {kept} used (ids and reasons in {path}); "
              f"first: {first['question_id']}: {first['error']}", flush=True)
    return path

"""DeepPerception's released training data, read as it is (no conversion step).

CoT-SFT files are LLaMA-Factory ShareGPT JSON (its dataset_info.json: formatting "sharegpt",
role/content tags, user/assistant), a list of

    {"messages": [{"role": "user", "content": "<image>Please locate ... in <answer> </answer> tags."},
                  {"role": "assistant", "content": "<think>...</think><answer>...</answer>"}],
     "images": ["images/xxx.jpg"]}

A record becomes one SFT sample: the user text without its `<image>` placeholder, the reply, and
the image. dprl puts the image before the text, which is where LLaMA-Factory puts it too when the
placeholder opens the user turn, as it does in these files.

GRPO files are parquet with the columns R1-V's grpo.py reads: `problem` (the question; dprl adds
the <think>/<answer> instruction, as R1-V does), `solution`
(`<answer> <|object_ref_start|>Name<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|> </answer>`,
0-1000 coordinates) and `image` (a datasets Image, stored as {"bytes", "path"}, or a path). A row
becomes a `dprl.data.kvg.Sample`, the structure GRPO draws its prompts from.
"""
from __future__ import annotations

import os

from dprl.data.kvg import Sample
from dprl.data.prompts import answer_boxes
from dprl.data.validate import DataError, bad_sample

IMAGE_TOKEN = "<image>"  # LLaMA-Factory's image placeholder in a ShareGPT turn
PROBLEM_SOLUTION = ("problem", "solution", "image")


def is_sharegpt(columns) -> bool:
    return "messages" in columns


def is_problem_solution(columns) -> bool:
    return "problem" in columns and "solution" in columns


def image_path(image, image_root: str) -> str:
    """An image path as written in a record -> the file, which must exist."""
    if not isinstance(image, str) or not image.strip():
        raise ValueError(f"image {image!r} is not a path")
    path = image if os.path.isabs(image) else os.path.join(image_root, image)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path!r} does not exist (image paths are relative to "
                                "data.image_root, by default the data file's folder)")
    return path


def sharegpt_fields(record: dict, image_root: str) -> tuple[str, str, str]:
    """(prompt, reply, image file) of one ShareGPT record; ValueError saying why it does not fit
    a CoT-SFT sample (one user turn holding one <image>, one assistant reply, one image)."""
    if record.get("system"):
        raise ValueError("the record has a system prompt; dprl's SFT prompts keep the checkpoint's "
                         "default system turn, as its evaluation and GRPO prompts do")
    messages = record.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("`messages` is not a list of {\"role\", \"content\"} turns")
    roles = [m.get("role") for m in messages]
    if roles != ["user", "assistant"]:
        raise ValueError(f"turns are {roles}; a CoT-SFT sample is one user turn, then one assistant reply")
    user, reply = messages[0].get("content"), messages[1].get("content")
    for role, text in (("user", user), ("assistant", reply)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"the {role} turn is empty or not text")
    images = record.get("images")
    if not isinstance(images, list) or len(images) != 1:
        n = len(images) if isinstance(images, list) else images
        raise ValueError(f"`images` holds {n!r} image(s); a grounding sample has exactly one")
    if user.count(IMAGE_TOKEN) != 1 or IMAGE_TOKEN in reply:
        raise ValueError(f"the user turn holds {user.count(IMAGE_TOKEN)} {IMAGE_TOKEN} placeholders"
                         f"{' and the reply holds some' if IMAGE_TOKEN in reply else ''}; expected "
                         "exactly one, in the user turn, for the one image")
    prompt = user.replace(IMAGE_TOKEN, "", 1)
    if not prompt.strip():
        raise ValueError("the user turn holds only the image placeholder, no question")
    return prompt, reply, image_path(images[0], image_root)


def problem_solution_sample(row: dict, sample_id: str, image_root: str) -> Sample:
    """One row of a released GRPO file as a grounding Sample; ValueError saying why it does not fit."""
    problem, solution = row.get("problem"), row.get("solution")
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError("`problem` (the question) is empty or not text")
    if not isinstance(solution, str) or not solution.strip():
        raise ValueError("`solution` is empty or not text")
    boxes = answer_boxes(solution)
    if not boxes:
        raise ValueError(f"no (x1,y1),(x2,y2) box in solution {solution!r}")
    image = row.get("image")
    if isinstance(image, dict) and not image.get("bytes"):
        image = image.get("path")  # a datasets Image stored by path only
    if not isinstance(image, dict):
        image = image_path(image, image_root)
    return Sample(sample_id, problem, image, solution.strip(), str(row.get("category") or ""), True,
                  boxes, row)


def load_problem_solution(rows, columns, path: str, image_root: str = "",
                          domains=()) -> tuple[list[Sample], list[dict]]:
    """(usable samples, bad samples as {"question_id", "error"}) of a released GRPO file's rows."""
    missing = [c for c in PROBLEM_SOLUTION if c not in columns]
    if missing:
        raise DataError(f"{path!r} lacks the column(s) {missing} of the released GRPO layout "
                        f"{list(PROBLEM_SOLUTION)}; it has {sorted(columns)}")
    if domains and "category" not in columns:
        raise DataError(f"data.domains={list(domains)} selects rows by their `category`, which "
                        f"{path!r} does not have; leave data.domains empty")
    root = image_root or os.path.dirname(os.path.abspath(path))
    samples, bad = [], []
    for i, row in enumerate(rows):
        sid = next((str(row[k]) for k in ("id", "question_id") if row.get(k) is not None), f"row-{i}")
        if domains and str(row.get("category")) not in domains:
            continue
        try:
            samples.append(problem_solution_sample(row, sid, root))
        except (ValueError, OSError) as err:
            bad.append(bad_sample(sid, str(err)))
    return samples, bad

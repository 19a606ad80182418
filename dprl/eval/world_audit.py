"""Where a chain of thought on the world's grid goes wrong: step by step against the truth.

The world's thought (dprl.data.world.chain_of_thought) has three steps a model can fail at:
recall ("Find the kalo: red, dark marks." - the named entity's look, from knowledge), perception
("top left: red plain, no." - the look of each cell) and the decision (which cell gets "yes").
Each is checked against the sample's truth, per split (seen / unseen domains):

    python -m dprl.eval.world_audit RUN_DIR [MODEL ...]

RUN_DIR is a pipeline run (world/ and eval/<model>/predictions.jsonl); the table is printed and
written to eval/<model>/audit.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re

from dprl.config import WorldConfig, load_config
from dprl.data.domains import make_categories
from dprl.data.world import cell_names

_PLAN = re.compile(r"Find the (\S+?): ([a-z]+), ([a-z ]+?)\.")


def _cell_of(box, grid: int) -> int:
    """Row-major cell index of a 0-1000 box's centre."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return min(int(cy * grid / 1000), grid - 1) * grid + min(int(cx * grid / 1000), grid - 1)


def audit(world_dir: str, predictions: list[dict]) -> dict:
    """{"seen"|"unseen": rates}: recall (plan colour, plan mark, both), perception (cells whose
    colour / mark was read right, empty cells called "none"), decision (the "yes" on the target's
    cell; on a cell of the recalled look), and Acc@0.5."""
    wcfg = load_config(WorldConfig, os.path.join(world_dir, "world_config.yaml"))
    if wcfg.layout != "grid":
        raise ValueError("the audit reads grid thoughts (world layout: grid)")
    grid = wcfg.grid_size
    cats = {c.name: c for cs in make_categories(wcfg.seen_domains + wcfg.unseen_domains,
                                                wcfg.categories_per_domain, wcfg.seed).values()
            for c in cs}
    names = cell_names(grid)
    cell_re = re.compile(r"(" + "|".join(names) + r"): ([a-z ]+?)[,.]")
    with open(os.path.join(world_dir, "kvg_test.jsonl")) as fh:
        test = {r["question_id"]: r for r in map(json.loads, fh)}
    counts: dict[str, dict[str, list[int]]] = {}

    def add(split, key, ok):
        c = counts.setdefault(split, {}).setdefault(key, [0, 0])
        c[0] += bool(ok)
        c[1] += 1

    for p in predictions:
        t = test.get(p["question_id"])
        if t is None:
            continue
        split = "seen" if t["seen"] else "unseen"
        target = cats[t["entity"]]
        text = p.get("prediction") or ""
        m = _PLAN.search(text)
        add(split, "recall: colour", m and m.group(2) == target.colour)
        add(split, "recall: mark", m and m.group(3) == target.mark_short)
        add(split, "recall: both", m and (m.group(2), m.group(3)) == (target.colour, target.mark_short))
        held = {_cell_of(b, grid): cats[n] for n, b in zip(t["candidate_entities"], t["candidate_boxes"])}
        for name, look in cell_re.findall(text):
            cat = held.get(names.index(name))
            if cat is None:
                add(split, "perception: empty cell called none", look == "none")
                continue
            colour, _, mark = look.partition(" ")
            add(split, "perception: colour", colour == cat.colour)
            add(split, "perception: mark", mark == cat.mark_short)
        yes = re.search(r"(" + "|".join(names) + r"): ([a-z ]+?), yes", text)
        add(split, "decision: yes on the target's cell",
            yes and names.index(yes.group(1)) == _cell_of(t["gt_boxes"][0], grid))
        if yes and m:
            add(split, "decision: yes on the recalled look", yes.group(2) == f"{m.group(2)} {m.group(3)}")
        add(split, "Acc@0.5", p.get("correct"))
    return {split: {k: {"rate": v[0] / v[1], "n": v[1]} for k, v in c.items()} for split, c in counts.items()}


def format_audit(name: str, result: dict) -> str:
    keys = list(dict.fromkeys(k for r in result.values() for k in r))
    lines = [f"{name}", f"  {'step':<40} {'seen':>8} {'unseen':>8}"]
    for k in keys:
        cells = [f"{100 * result[s][k]['rate']:7.1f}%" if k in result.get(s, {}) else f"{'-':>8}"
                 for s in ("seen", "unseen")]
        lines.append(f"  {k:<40} {cells[0]} {cells[1]}")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("models", nargs="*", default=["cot-sft", "cot-sft+grpo"])
    args = ap.parse_args(argv)
    for name in args.models:
        folder = os.path.join(args.run_dir, "eval", name)
        with open(os.path.join(folder, "predictions.jsonl")) as fh:
            preds = [json.loads(line) for line in fh if line.strip()]
        result = audit(os.path.join(args.run_dir, "world"), preds)
        with open(os.path.join(folder, "audit.json"), "w") as fh:
            json.dump(result, fh, indent=2)
        print(format_audit(name, result))


if __name__ == "__main__":
    main()

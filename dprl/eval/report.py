"""The Markdown table laid out like DeepPerception's Table 1: one row per model, the seen domains
and their average, the unseen domains and their average, then overall (accuracy in %)."""
from __future__ import annotations

import math


def _pct(m: dict | None) -> str:
    if not m or not m.get("n") or math.isnan(m["acc"]):
        return "-"
    return f"{100 * m['acc']:.2f}"


def markdown_table(results: dict[str, dict], metric_name: str = "Acc@0.5",
                   parse_failures: bool = True) -> str:
    """results: model name -> metrics() dict. Domains in first-seen order across models; a line
    of parse-failure counts under the table unless `parse_failures` is off."""
    seen, unseen = [], []
    for m in results.values():
        for d, dm in m["domains"].items():
            lst = seen if dm["seen"] else unseen
            if d not in lst:
                lst.append(d)
    header = ["model"] + seen + (["seen avg"] if seen else []) + unseen + (["unseen avg"] if unseen else []) + ["overall"]
    lines = [f"{metric_name} (%)", "", "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, m in results.items():
        cells = [name] + [_pct(m["domains"].get(d)) for d in seen]
        if seen:
            cells.append(_pct(m["seen"]))
        cells += [_pct(m["domains"].get(d)) for d in unseen]
        if unseen:
            cells.append(_pct(m["unseen"]))
        cells.append(_pct(m["overall"]))
        lines.append("| " + " | ".join(cells) + " |")
    if parse_failures:
        fails = {name: m["overall"].get("parse_failures", 0) for name, m in results.items()}
        lines += ["", "parse failures: " + ", ".join(f"{k} {v}/{results[k]['overall']['n']}"
                                                    for k, v in fails.items())]
    return "\n".join(lines) + "\n"

"""The knowledge probe (DeepPerception's Figure 4): does the model know what an entity looks like
before it is asked to find it, and does grounding go better for the entities it knows?

A knowledge file has one row per entity: `entity`, `domain`, optionally `seen`, and what the
probe asks about:
  - `attributes` ({"colour": "red", "mark": "a black head"}), for the `look` probe: an open
    question ("What does the kalo look like?") whose answer is right for an attribute when it
    says the entity's value and no other value that entities of its domain have for that
    attribute (an answer listing every colour knows none);
  - `description` (free text), for the `choice` probe: pick the entity's description among
    those of other entities of its domain, by letter.
The world writes both (knowledge_base.jsonl); for real KVG-Bench data, write such a file for the
benchmark's entities. An entity is *known* when every attribute is right (look) or the letter is
right (choice). Grounding samples are matched to entities by their `entity` field, or else by
the entity named in the question (<|object_ref_start|>the X<|object_ref_end|>).
"""
from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, field

from dprl.data.prompts import R1_LETTER_INSTRUCTION, hide_name, referred_entity

_LETTERS = "ABCDEFGH"


@dataclass
class Entity:
    name: str
    domain: str
    seen: bool
    attributes: dict[str, str] = field(default_factory=dict)
    description: str = ""


@dataclass
class ProbeItem:
    """One question about one entity, with what makes an answer right."""

    entity: Entity
    question: str
    # look: attribute -> (right value, the other values of the domain); choice: the right letter.
    expected: dict[str, tuple[str, list[str]]] | str


def entity_key(name: str) -> str:
    """How entity names are compared: case and a leading article do not count."""
    name = re.sub(r"\s+", " ", name.strip().lower())
    return re.sub(r"^(the|a|an) ", "", name)


def load_entities(path: str, seen_domains) -> list[Entity]:
    """The knowledge file's rows (JSONL), one entity each; `seen` defaults to whether the
    entity's domain is one of `seen_domains`. Raises naming the row that lacks a field."""
    out, names = [], set()
    with open(path) as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = [k for k in ("entity", "domain") if not row.get(k)]
            if missing:
                raise ValueError(f"{path!r} row {i}: the knowledge probe needs {missing} in every row")
            key = entity_key(row["entity"])
            if key in names:
                raise ValueError(f"{path!r} row {i}: entity {row['entity']!r} appears twice")
            names.add(key)
            seen = row["seen"] if "seen" in row else row["domain"] in seen_domains
            out.append(Entity(row["entity"], row["domain"], bool(seen),
                              {str(k): str(v) for k, v in (row.get("attributes") or {}).items()},
                              str(row.get("description") or "")))
    if not out:
        raise ValueError(f"{path!r} has no entities")
    return out


def _mentions(text: str, phrase: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(phrase.lower()) + r"(?!\w)", text.lower()) is not None


def look_items(entities: list[Entity], template: str) -> list[ProbeItem]:
    """The open `look` question for each entity, with each attribute's rivals in its domain."""
    values: dict[tuple[str, str], set[str]] = {}
    for e in entities:
        for k, v in e.attributes.items():
            values.setdefault((e.domain, k), set()).add(v)
    items = []
    for e in entities:
        if not e.attributes:
            raise ValueError(f"entity {e.name!r} has no `attributes`: the look probe scores an "
                             "answer by them (or use probe.kind=choice with descriptions)")
        expected = {k: (v, sorted(values[(e.domain, k)] - {v})) for k, v in e.attributes.items()}
        items.append(ProbeItem(e, template.format(entity=e.name), expected))
    return items


def _nameless(e: Entity) -> str:
    """The description with the entity's own name replaced, so an option gives no name away."""
    return hide_name(e.description, e.name)


def choice_items(entities: list[Entity], choices: int, seed: int) -> list[ProbeItem]:
    """"Which description fits the X?" among `choices` descriptions of its domain, by letter."""
    by_domain: dict[str, list[Entity]] = {}
    for e in entities:
        if not e.description:
            raise ValueError(f"entity {e.name!r} has no `description`: the choice probe offers "
                             "descriptions (or use probe.kind=look with attributes)")
        by_domain.setdefault(e.domain, []).append(e)
    items = []
    for e in entities:
        rng = random.Random(f"{seed}-probe-{e.name}")
        others = [o for o in by_domain[e.domain] if o is not e and _nameless(o) != _nameless(e)]
        options = [e] + rng.sample(others, min(len(others), choices - 1))
        if len(options) < 2:
            raise ValueError(f"domain {e.domain!r} needs two entities with different descriptions "
                             "for a choice question")
        rng.shuffle(options)
        listed = " ".join(f"{_LETTERS[i]}. {_nameless(o)}" for i, o in enumerate(options))
        question = (f"Which description fits the {e.name}? Options: {listed} "
                    f"Answer with the option's letter.{R1_LETTER_INSTRUCTION}")
        items.append(ProbeItem(e, question, _LETTERS[options.index(e)]))
    return items


def score_answer(item: ProbeItem, text: str) -> dict:
    """{"known": bool, ...}: per attribute whether it was right (look), or the letter (choice)."""
    if isinstance(item.expected, str):
        from dprl.rewards import parse_letters

        letter = str(parse_letters([text], scope="answer")[0])
        return {"letter": letter, "known": letter == item.expected}
    right = {k: _mentions(text, v) and not any(_mentions(text, o) for o in others)
             for k, (v, others) in item.expected.items()}
    return {"attributes_right": right, "known": all(right.values())}


def probe_rows(items: list[ProbeItem], texts: list[str]) -> list[dict]:
    rows = []
    for item, text in zip(items, texts):
        e = item.entity
        rows.append({"entity": e.name, "domain": e.domain, "seen": e.seen, "question": item.question,
                     "answer": text} | score_answer(item, text))
    return rows


def _share(rows: list[dict], key: str) -> dict:
    n = len(rows)
    return {"n": n, "acc": sum(bool(r[key]) for r in rows) / n if n else math.nan}


def probe_metrics(rows: list[dict]) -> dict:
    """Share of entities known, per domain and for seen, unseen and all: eval's metrics() with
    "known" as the score."""
    from dprl.eval.scoring import metrics

    return metrics([{"domain": r["domain"], "seen": r["seen"], "correct": bool(r["known"]),
                     "parse_fail": False} for r in rows])


def sample_entity(record: dict, question: str) -> str:
    return entity_key(record.get("entity") or referred_entity(question))


def grounding_by_knowledge(predictions: list[dict], entities_of: dict[str, str], probe: list[dict]) -> dict:
    """Acc@threshold of the grounding predictions split by whether the probe found the sample's
    entity known: {"seen"|"unseen"|"overall": {"known": {n, acc}, "unknown": {n, acc},
    "not_probed": n}}. `entities_of`: question_id -> entity key."""
    known = {entity_key(r["entity"]): bool(r["known"]) for r in probe}
    out = {}
    for split in ("seen", "unseen", "overall"):
        rows = [p for p in predictions if split == "overall" or p["seen"] == (split == "seen")]
        status = [known.get(entities_of.get(p["question_id"], "")) for p in rows]
        out[split] = {"known": _share([p for p, k in zip(rows, status) if k is True], "correct"),
                      "unknown": _share([p for p, k in zip(rows, status) if k is False], "correct"),
                      "not_probed": sum(k is None for k in status)}
    return out


def markdown(results: dict[str, dict]) -> str:
    """Two tables: entities known per domain, and Acc@0.5 on the entities known vs not known.
    results: model -> {"probe": probe_metrics(), "grounding": grounding_by_knowledge()}."""
    from dprl.eval.report import markdown_table

    probe = {name: r["probe"] for name, r in results.items()}
    table = markdown_table(probe, "Knowledge probe: entities known", parse_failures=False).rstrip("\n")
    lines = [table, "", "Acc@0.5 (%) by whether the probe found the entity known (samples in brackets)",
             "", "| model | seen known | seen unknown | unseen known | unseen unknown |",
             "|---|---:|---:|---:|---:|"]

    def cell(m):
        return "-" if not m["n"] else f"{100 * m['acc']:.2f} ({m['n']})"

    for name, r in results.items():
        g = r["grounding"]
        lines.append(f"| {name} | {cell(g['seen']['known'])} | {cell(g['seen']['unknown'])} | "
                     f"{cell(g['unseen']['known'])} | {cell(g['unseen']['unknown'])} |")
    return "\n".join(lines) + "\n"

"""Knowledge filtering: keep only the categories the model knows (text only, no picture).

DeepPerception trains grounding on entities the model already knows, so that the chain of
thought can use that knowledge; a category the model cannot tell from its neighbours would teach
it to guess. Two ways to ask (KnowledgeFilterConfig.kind):
  identify  the model describes the category, then picks which of `choices` categories of the
            domain its own description (name hidden) fits. Needs only the category names; a
            description that says nothing specific fits any option (chance: 1 / choices).
  look      the knowledge probe's open question (dprl.eval.knowledge_probe): what does the
            category look like, right when it names the category's attributes from a file.
  choice    the knowledge probe's letter question: which of several given descriptions fits.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from dprl.config.data_engine import KnowledgeFilterConfig
from dprl.data.engine.asking import Asker, text_request
from dprl.data.prompts import R1_LETTER_INSTRUCTION, hide_name

LETTERS = "ABCDEFGH"


@dataclass(frozen=True)
class SourceCategory:
    """A category as a source names it (the world's own categories are dprl.data.domains.Category)."""

    domain: str
    name: str


def identify_question(category: SourceCategory, description: str, rivals: list[str], rng: random.Random) -> tuple[str, str]:
    """(question, right letter): which of the options the description fits."""
    options = [category.name] + rivals
    rng.shuffle(options)
    listed = " ".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    said = " ".join(hide_name(description, category.name).split()) or "(nothing)"
    question = (f"Which {category.domain} does this description fit? \"{said}\" Options: {listed}. "
                f"Answer with the option's letter.{R1_LETTER_INSTRUCTION}")
    return question, LETTERS[options.index(category.name)]


def _letters_right(answers: list[list[str]], expected: list[str]) -> list[list[bool]]:
    from dprl.rewards import parse_letters

    flat = [a for group in answers for a in group]
    got = iter(parse_letters(flat, scope="answer").tolist()) if flat else iter(())
    return [[next(got) == want for _ in group] for group, want in zip(answers, expected)]


def identify_scores(asker: Asker, categories: list[SourceCategory], cfg: KnowledgeFilterConfig,
                    seed: int) -> list[dict]:
    by_domain: dict[str, list[str]] = {}
    for c in categories:
        by_domain.setdefault(c.domain, []).append(c.name)
    described = asker.ask([text_request(cfg.describe_template.format(entity=c.name, domain=c.domain))
                           for c in categories], "knowledge: describe")
    questions, expected, owner = [], [], []
    for i, (c, descriptions) in enumerate(zip(categories, described)):
        rng = random.Random(f"{seed}-identify-{c.domain}-{c.name}")
        others = sorted(set(by_domain[c.domain]) - {c.name})
        for d in descriptions:
            rivals = rng.sample(others, min(len(others), cfg.choices - 1))
            q, letter = identify_question(c, d, rivals, rng)
            questions.append(text_request(q))
            expected.append(letter)
            owner.append(i)
    right = _letters_right(asker.ask(questions, "knowledge: identify"), expected)
    per_category: list[list[bool]] = [[] for _ in categories]
    for i, r in zip(owner, right):
        per_category[i].extend(r)
    return [{"domain": c.domain, "entity": c.name, "score": float(np.mean(r)) if r else 0.0,
             "answers": len(r), "descriptions": d}
            for c, r, d in zip(categories, per_category, described)]


def probe_scores(asker: Asker, categories: list[SourceCategory], cfg: KnowledgeFilterConfig,
                 seed: int) -> list[dict]:
    """The knowledge probe's look or choice question per category, from cfg.knowledge_path."""
    from dprl.eval.knowledge_probe import choice_items, entity_key, load_entities, look_items, score_answer

    wanted = {(c.domain, entity_key(c.name)) for c in categories}
    entities = load_entities(cfg.knowledge_path, seen_domains=())
    missing = wanted - {(e.domain, entity_key(e.name)) for e in entities}
    if missing:
        domain, name = sorted(missing)[0]
        raise ValueError(f"{cfg.knowledge_path!r} has no row for {name!r} ({domain}), nor for "
                         f"{len(missing) - 1} more categories of the sources; knowledge.kind={cfg.kind} "
                         "needs one row per category (or use kind: identify)")
    entities = [e for e in entities if (e.domain, entity_key(e.name)) in wanted]
    if cfg.kind == "look":
        items = look_items(entities, "{entity}")
        for item in items:  # the engine's question, which may name the domain too
            item.question = cfg.describe_template.format(entity=item.entity.name, domain=item.entity.domain)
    else:
        items = choice_items(entities, cfg.choices, seed)
    answers = asker.ask([text_request(it.question) for it in items], f"knowledge: {cfg.kind}")
    rows = []
    for it, group in zip(items, answers):
        right = [bool(score_answer(it, text)["known"]) for text in group]
        rows.append({"domain": it.entity.domain, "entity": it.entity.name,
                     "score": float(np.mean(right)) if right else 0.0, "answers": len(right)})
    return rows


def knowledge_scores(asker: Asker, categories: list[SourceCategory], cfg: KnowledgeFilterConfig,
                     seed: int = 0) -> list[dict]:
    """One row per category: domain, entity, score (share of answers right), known (score >=
    threshold), and how many answers it was scored on."""
    scorer = identify_scores if cfg.kind == "identify" else probe_scores
    rows = scorer(asker, categories, cfg, seed)
    for row in rows:
        row["known"] = row["score"] >= cfg.threshold
    return rows


def summary(rows: list[dict]) -> dict:
    """Per domain: categories asked, known, and the mean score."""
    out: dict[str, dict] = {}
    for r in rows:
        d = out.setdefault(r["domain"], {"categories": 0, "known": 0, "scores": []})
        d["categories"] += 1
        d["known"] += bool(r["known"])
        d["scores"].append(r["score"])
    return {k: {"categories": v["categories"], "known": v["known"],
                "mean_score": float(np.mean(v["scores"]))} for k, v in sorted(out.items())}

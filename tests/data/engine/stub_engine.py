"""A rollout engine whose answers are known: a function of the question's text and the sample's
index among the n answers (and of the request itself, for a function that takes three
arguments), so the data engine's filters can be checked decision by decision."""
from __future__ import annotations

import inspect

from dprl.data.engine.asking import Asker
from dprl.rollout import Completion


class StubEngine:
    def __init__(self, answer, n: int):
        self.answer, self.n = answer, n
        self.with_request = len(inspect.signature(answer).parameters) == 3
        self.asked: list = []  # every request, in order

    def generate(self, requests, seed=None, max_tokens=None):
        out = []
        for i, req in enumerate(requests):
            self.asked.append(req)
            text = req.messages[-1]["content"][-1]["text"]
            for k in range(self.n):
                args = (text, k, req) if self.with_request else (text, k)
                out.append(Completion(i, [], self.answer(*args), [], "stop"))
        return out


def stub_asker(answer, n: int, batch_size: int = 3) -> tuple[Asker, StubEngine]:
    engine = StubEngine(answer, n)
    return Asker(engine, lambda c: c.text, batch_size=batch_size, progress=False), engine

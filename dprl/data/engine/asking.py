"""Asking a model many questions through the rollout contract: in batches, with a progress bar,
answers grouped per question and decoded as the reward parser reads them."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tqdm import tqdm

from dprl.models.chat import user_turn


@dataclass
class Asker:
    """A RolloutEngine (any backend) and how its completions become text."""

    rollout: object  # dprl.rollout.RolloutEngine
    decode: Callable  # Completion -> text (dprl.rollout.answer_text keeps box tokens)
    batch_size: int = 64
    progress: bool = True

    def ask(self, requests: Sequence, desc: str) -> list[list[str]]:
        """The engine's n answers to each request, in request order -> [len(requests)][n]."""
        answers: list[list[str]] = [[] for _ in requests]
        bar = tqdm(total=len(requests), desc=desc, unit="prompt", disable=not self.progress or not requests)
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start:start + self.batch_size]
            for comp in self.rollout.generate(chunk):
                answers[start + comp.prompt_index].append(self.decode(comp))
            bar.update(len(chunk))
        bar.close()
        return answers


def text_request(text: str):
    """A text-only question as a rollout request."""
    from dprl.rollout import RolloutRequest

    return RolloutRequest(messages=[user_turn(text, image=False)])


def image_request(text: str, image):
    """A question about one picture as a rollout request."""
    from dprl.rollout import RolloutRequest

    return RolloutRequest(messages=[user_turn(text)], images=[image])

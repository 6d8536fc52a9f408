"""Classify every image of a labelled folder through a ModelClient, keeping its true class.

The client does the batching, concurrency, retries and splitting of refused batches; this
module only orders the work so that a folder the model cannot answer is caught early: the
first round (one batch per concurrent request) takes images from every class in turn. The
rest is sent in chunks of CHUNK_ROUNDS rounds, since the client reads every file of a call
into memory before sending: memory stays bounded by the chunk, not the folder.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

from client.api import ModelClient
from client.evaluation.classes import ModelClasses
from client.evaluation.folder import LabelledFolder
from client.results import Prediction

CHUNK_ROUNDS = 8  # after the first round: batch_size * concurrency * CHUNK_ROUNDS images per call


@dataclass
class Labelled:
    true: str
    prediction: Prediction

    @property
    def source(self) -> str:
        return self.prediction.source

    @property
    def ok(self) -> bool:
        return self.prediction.ok

    @property
    def correct(self) -> bool | None:
        """None for an image the server refused: it is neither right nor wrong."""
        return self.prediction.label == self.true if self.ok else None

    @property
    def confidence(self) -> float | None:
        return self.prediction.probability

    def to_dict(self) -> dict:
        return {"source": self.source, "true": self.true, "correct": self.correct,
                **{k: v for k, v in self.prediction.to_dict().items() if k != "source"}}


@dataclass
class FolderAnswers:
    results: list[Labelled]      # in the folder's order
    classes: ModelClasses
    unconfirmed: list[str]       # folder classes the model never answered (see classes.py)

    @property
    def answered(self) -> list[Labelled]:
        return [r for r in self.results if r.ok]

    @property
    def refused(self) -> list[Labelled]:
        return [r for r in self.results if not r.ok]

    def versions_answered(self) -> dict[str, int]:
        """How many answers each model version gave ("unreported": REST without --version)."""
        counts = Counter(str(r.prediction.version) if r.prediction.version is not None else "unreported"
                         for r in self.answered)
        return dict(sorted(counts.items()))


def interleaved(items: list[tuple[str, str]]) -> list[int]:
    """Indices of (path, class) items taking one of each class in turn."""
    queues: dict[str, list[int]] = {}
    for i, (_, name) in enumerate(items):
        queues.setdefault(name, []).append(i)
    order, depth = [], 0
    while len(order) < len(items):
        order.extend(q[depth] for q in queues.values() if depth < len(q))
        depth += 1
    return order


def chunks(order: list[int], first: int, size: int) -> list[list[int]]:
    """The first round, then the rest `size` at a time."""
    size = max(1, size)
    return [order[:first]] + [order[i:i + size] for i in range(first, len(order), size)]


def classify_folder(client: ModelClient, folder: LabelledFolder, classes: ModelClasses,
                    on_done: Callable[[list[Prediction]], None] | None = None,
                    chunk_size: int | None = None) -> FolderAnswers:
    """`chunk_size`: images per predict_files call after the first round (default
    batch_size * concurrency * CHUNK_ROUNDS)."""
    classes.check_count(folder.classes)
    order = interleaved(folder.files)
    first_round = max(client.batch_size * client.concurrency, len(folder.classes))
    chunk_size = chunk_size or client.batch_size * client.concurrency * CHUNK_ROUNDS
    answers: dict[int, Prediction] = {}
    for chunk in chunks(order, first_round, chunk_size):
        if not chunk:
            continue
        predictions = client.predict_files([folder.files[i][0] for i in chunk], on_done)
        answers.update(zip(chunk, predictions))
        classes.learn(predictions)
        unconfirmed = classes.check_folder(folder.classes, final=len(answers) == len(order))
    results = [Labelled(true, answers[i]) for i, (_, true) in enumerate(folder.files)]
    return FolderAnswers(results, classes, unconfirmed)

"""The statistics of an evaluation, in plain Python (no TensorFlow, numpy or matplotlib).

Classes are compared by name: `true` and `predicted` are label strings. A figure that is
undefined (a recall with no support, a precision with nothing predicted, an interval of no
images) is None, never a made-up 0, so report.json says "null" where there is nothing to say.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval
CALIBRATION_BINS = 10


def ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson's score interval for a binomial proportion (Wilson 1927): unlike the normal
    approximation it stays inside [0, 1] and is sound at 0 or n successes and for small n."""
    if n == 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Accuracy:
    correct: int
    total: int
    value: float | None
    interval_95: tuple[float, float] | None

    @classmethod
    def of(cls, correct: int, total: int) -> "Accuracy":
        return cls(correct, total, ratio(correct, total), wilson_interval(correct, total))


def confusion_matrix(true: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> list[list[int]]:
    """matrix[i][j]: images of class classes[i] answered as classes[j] (rows true, columns answers)."""
    index = {name: i for i, name in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    for t, p in zip(true, predicted, strict=True):
        matrix[index[t]][index[p]] += 1
    return matrix


@dataclass
class ClassMetrics:
    precision: float | None  # None: the model never answered this class
    recall: float | None     # None: no image of this class (no support)
    f1: float | None
    support: int             # images of this class
    predicted: int           # answers naming this class


def per_class_metrics(matrix: list[list[int]], classes: Sequence[str]) -> dict[str, ClassMetrics]:
    result = {}
    for i, name in enumerate(classes):
        hits = matrix[i][i]
        support = sum(matrix[i])
        predicted = sum(row[i] for row in matrix)
        precision, recall = ratio(hits, predicted), ratio(hits, support)
        if precision is None or recall is None:
            f1 = None
        else:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result[name] = ClassMetrics(precision, recall, f1, support, predicted)
    return result


def macro_average(metrics: dict[str, ClassMetrics]) -> dict[str, float | None]:
    """Unweighted mean over the classes that have images (classes without support have no recall)."""
    supported = [m for m in metrics.values() if m.support]
    out = {}
    for key in ("precision", "recall", "f1"):
        values = [getattr(m, key) or 0.0 for m in supported]  # never answered: precision counts as 0
        out[key] = sum(values) / len(values) if values else None
    return out


@dataclass
class CalibrationBin:
    lower: float
    upper: float
    count: int
    accuracy: float | None    # fraction of this bin's answers that were right
    confidence: float | None  # mean probability the model gave its answer


@dataclass
class Calibration:
    ece: float | None  # expected calibration error: sum over bins of count/N * |accuracy - confidence|
    bins: list[CalibrationBin]


def calibration(confidences: Sequence[float], correct: Sequence[bool], bins: int = CALIBRATION_BINS) -> Calibration:
    """Equal-width bins [k/bins, (k+1)/bins), the last one closed at 1 (Guo et al. 2017, "On
    Calibration of Modern Neural Networks"). The confidence is the probability of the answer."""
    members: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for confidence, right in zip(confidences, correct, strict=True):
        members[min(int(confidence * bins), bins - 1)].append((confidence, right))
    total = len(confidences)
    table, ece = [], 0.0
    for k, items in enumerate(members):
        accuracy = ratio(sum(r for _, r in items), len(items))
        confidence = sum(c for c, _ in items) / len(items) if items else None
        if items:
            ece += len(items) / total * abs(accuracy - confidence)
        table.append(CalibrationBin(k / bins, (k + 1) / bins, len(items), accuracy, confidence))
    return Calibration(ece if total else None, table)


def mcnemar_exact(only_first_right: int, only_second_right: int) -> float:
    """Two-sided exact McNemar test (a binomial test of the discordant pairs with p = 1/2):
    the probability, if both models were equally accurate, of a split of the disagreements
    at least as uneven as this one."""
    n = only_first_right + only_second_right
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_first_right, only_second_right) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def as_dict(value) -> dict:
    """Dataclasses (nested) as plain dicts for JSON."""
    return asdict(value)

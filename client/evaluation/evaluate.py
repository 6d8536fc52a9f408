"""`predict evaluate`: how good are one model version's answers on a labelled folder.

Every figure comes from the server's own answers over the same API the users' traffic
takes. Images the server refused are listed with their errors and left out of every
figure: they are neither right nor wrong.
"""
from __future__ import annotations

import datetime
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from client.api import ModelClient
from client.evaluation import metrics, outputs
from client.evaluation.classes import ModelClasses, ServedModel, describe
from client.evaluation.folder import EvaluationError, LabelledFolder
from client.evaluation.labelled import FolderAnswers, Labelled, classify_folder
from client.results import Prediction

MISTAKES_SHOWN = 16
REFUSED_SHOWN = 20  # on the terminal; report.json lists them all


@dataclass
class Evaluation:
    target: outputs.Target
    served: ServedModel
    folder: LabelledFolder
    answers: FolderAnswers
    started: datetime.datetime
    seconds: float

    @property
    def classes(self) -> list[str]:
        """Every class that appears: the model's labels in its index order, then folder
        classes it never answered."""
        return self.answers.classes.labels + [c for c in self.answers.unconfirmed
                                              if c not in self.answers.classes.labels]

    def mistakes(self, limit: int = MISTAKES_SHOWN) -> list[Labelled]:
        """The most confident wrong answers first."""
        wrong = [r for r in self.answers.answered if not r.correct]
        return sorted(wrong, key=lambda r: -r.confidence)[:limit]


def served_model(client: ModelClient, signature_name: str | None) -> ServedModel:
    return describe(client.metadata(), signature_name)


def evaluate(client: ModelClient, folder: LabelledFolder, target: outputs.Target, signature_name: str | None = None,
             on_done: Callable[[list[Prediction]], None] | None = None) -> Evaluation:
    started, clock = outputs.utc_now(), time.perf_counter()
    served = served_model(client, signature_name)
    answers = classify_folder(client, folder, ModelClasses(served.num_classes), on_done)
    return Evaluation(target, served, folder, answers, started, time.perf_counter() - clock)


def require_answers(evaluation: Evaluation) -> None:
    """`predict evaluate` cannot pass when the server answered no image: no figure exists, so
    this is "could not run" (with the count refused and the most frequent reason in one line),
    not a pass without --min-accuracy. (compare does not call it: a candidate that refuses every
    image the baseline answers is "worse", its own verdict.)"""
    if evaluation.answers.answered:
        return
    refused = evaluation.answers.refused
    reasons = Counter(" ".join((r.prediction.error or "").split()) for r in refused)
    reason, count = reasons.most_common(1)[0]
    also = f"; {len(reasons) - 1} other reason(s)" if len(reasons) > 1 else ""
    raise EvaluationError(f"no image was answered: the server refused all {len(refused)} "
                          f"({count} with: {reason}{also})")


def figures(evaluation: Evaluation) -> dict:
    answered = evaluation.answers.answered
    classes = evaluation.classes
    matrix = metrics.confusion_matrix([r.true for r in answered], [r.prediction.label for r in answered], classes)
    per_class = metrics.per_class_metrics(matrix, classes)
    return {
        "images": len(evaluation.answers.results),
        "answered": len(answered),
        "accuracy": metrics.as_dict(metrics.Accuracy.of(sum(bool(r.correct) for r in answered), len(answered))),
        "per_class": {name: metrics.as_dict(m) for name, m in per_class.items()},
        "macro_average": metrics.macro_average(per_class),
        "confusion_matrix": {"classes": classes, "rows": "true class", "columns": "answer", "counts": matrix},
        "calibration": metrics.as_dict(metrics.calibration([r.confidence for r in answered],
                                                           [bool(r.correct) for r in answered])),
        "refused": {"count": len(evaluation.answers.refused),
                    "images": [{"source": r.source, "true": r.true, "error": r.prediction.error}
                               for r in evaluation.answers.refused]},
    }


def report(evaluation: Evaluation, min_accuracy: float | None = None) -> dict:
    served, target = evaluation.served, evaluation.target
    document = {
        **outputs.context("evaluate", target, evaluation.started),
        "model": {"name": target.model, "asked": {"version": target.version, "label": target.label},
                  "version": served.version, "signature_name": served.signature_name,
                  "signature": served.signature, "num_classes": served.num_classes,
                  "classes": evaluation.answers.classes.labels},
        "versions_answered": evaluation.answers.versions_answered(),
        "data": {"dir": os.path.abspath(evaluation.folder.root), "classes": evaluation.folder.classes,
                 "images_per_class": {c: evaluation.folder.count(c) for c in evaluation.folder.classes},
                 "unconfirmed_classes": evaluation.answers.unconfirmed},
        **figures(evaluation),
        "seconds": round(evaluation.seconds, 3),
    }
    if min_accuracy is not None:
        accuracy = document["accuracy"]["value"]
        document["min_accuracy"] = {"required": min_accuracy,
                                    "passed": accuracy is not None and accuracy >= min_accuracy}
    return document


def title(evaluation: Evaluation) -> str:
    """E.g. "cats_vs_dogs label stable (version 1)"."""
    return f"{evaluation.target.model} {evaluation.target.describe(evaluation.served.version)}"


def write(evaluation: Evaluation, document: dict, directory: str) -> list[str]:
    """report.json, predictions.jsonl and the three figures; returns the file names."""
    from client.evaluation import figures as plots  # matplotlib only when writing

    outputs.prepare_output_dir(directory)
    heading = title(evaluation)
    written = {
        "confusion": plots.confusion_png(document["confusion_matrix"], os.path.join(directory, "confusion.png"),
                                         heading),
        "reliability": plots.reliability_png(document["calibration"], os.path.join(directory, "reliability.png"),
                                             heading),
        "mistakes": plots.image_grid_png(
            [(r.source, f"true {r.true}\nanswer {r.prediction.label} {r.confidence:.3f}")
             for r in evaluation.mistakes()],
            os.path.join(directory, "mistakes.png"), f"{heading}: most confident mistakes"),
        "predictions": outputs.PREDICTIONS_FILE,
    }
    outputs.write_jsonl(os.path.join(directory, outputs.PREDICTIONS_FILE),
                        (r.to_dict() for r in evaluation.answers.results))
    document["outputs"] = {k: os.path.basename(v) for k, v in written.items()}
    outputs.write_json(os.path.join(directory, outputs.REPORT_FILE), document)
    return [outputs.REPORT_FILE, *document["outputs"].values()]


def default_output_dir(evaluation: Evaluation) -> str:
    return outputs.default_output_dir("evaluation", evaluation.target.model,
                                      [evaluation.target.slug(evaluation.served.version)], evaluation.started)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary(document: dict, heading: str) -> list[str]:
    """The report's headline figures as text lines for the terminal."""
    accuracy = document["accuracy"]
    interval = accuracy["interval_95"]
    lines = [f"{heading} over {document['server']['transport']} "
             f"{document['server']['address']}, {document['images']} images in {document['data']['dir']}: "
             f"{document['answered']} answered, {document['refused']['count']} refused",
             f"accuracy {_fmt(accuracy['value'])} ({accuracy['correct']} of {accuracy['total']}), 95% interval "
             + (f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "-"),
             f"{'class':<16} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
    for name, m in document["per_class"].items():
        lines.append(f"{name:<16} {_fmt(m['precision']):>9} {_fmt(m['recall']):>7} {_fmt(m['f1']):>7} "
                     f"{m['support']:>8}")
    matrix = document["confusion_matrix"]
    lines.append("confusion (rows: true class, columns: answer)")
    lines.append(" " * 16 + "".join(f" {c[:8]:>8}" for c in matrix["classes"]))
    lines.extend(f"{c:<16}" + "".join(f" {n:>8}" for n in row) for c, row in zip(matrix["classes"], matrix["counts"]))
    lines.append(f"calibration error (ECE, {len(document['calibration']['bins'])} bins) "
                 f"{_fmt(document['calibration']['ece'])}")
    refused = document["refused"]["images"]
    lines.extend(f"refused: {item['source']}: {item['error']}" for item in refused[:REFUSED_SHOWN])
    if len(refused) > REFUSED_SHOWN:
        lines.append(f"refused: {len(refused) - REFUSED_SHOWN} more, listed in report.json")
    if document["data"]["unconfirmed_classes"]:
        lines.append(f"warning: the model never answered {', '.join(document['data']['unconfirmed_classes'])}: "
                     "cannot confirm it knows these classes; their images count as mistakes")
    answered_by = set(document["versions_answered"]) - {"unreported"}
    if answered_by - {str(document["model"]["version"])}:
        lines.append(f"warning: the server reported version {document['model']['version']} but answers came from "
                     f"versions {', '.join(f'{v} ({n})' for v, n in document['versions_answered'].items())}")
    return lines

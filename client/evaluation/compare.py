"""`predict compare`: two versions of a model on the same images.

Agreement is over the images both answered. Accuracy of each side is over those same
images, so the difference is exactly (only baseline right - only candidate right) / n and
McNemar's exact test on those two counts says whether it is more than chance. An image
one side refused and the other answered is listed apart: a candidate that refuses images
the baseline answers (a broken preprocessing, say) is worse whatever the accuracy says.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from client.api import ModelClient
from client.evaluation import metrics, outputs
from client.evaluation.evaluate import Evaluation, evaluate
from client.evaluation.folder import LabelledFolder
from client.results import Prediction

DISAGREEMENTS_SHOWN = 16
ALPHA = 0.05


@dataclass
class Comparison:
    baseline: Evaluation
    candidate: Evaluation

    def pairs(self):
        return list(zip(self.baseline.answers.results, self.candidate.answers.results, strict=True))

    def both_answered(self):
        return [(a, b) for a, b in self.pairs() if a.ok and b.ok]

    def disagreements(self):
        """Images both answered differently, the most confident disagreement first."""
        differing = [(a, b) for a, b in self.both_answered() if a.prediction.label != b.prediction.label]
        return sorted(differing, key=lambda ab: -max(ab[0].confidence, ab[1].confidence))


def compare(baseline: ModelClient, candidate: ModelClient, folder: LabelledFolder,
            baseline_target: outputs.Target, candidate_target: outputs.Target, signature_name: str | None = None,
            on_done: Callable[[list[Prediction]], None] | None = None) -> Comparison:
    return Comparison(evaluate(baseline, folder, baseline_target, signature_name, on_done),
                      evaluate(candidate, folder, candidate_target, signature_name, on_done))


def _side(evaluation: Evaluation, both: list, first: bool) -> dict:
    right = sum(bool((a if first else b).correct) for a, b in both)
    return {"asked": {"version": evaluation.target.version, "label": evaluation.target.label},
            "version": evaluation.served.version, "versions_answered": evaluation.answers.versions_answered(),
            "accuracy": metrics.as_dict(metrics.Accuracy.of(right, len(both))),
            "refused": len(evaluation.answers.refused)}


def verdict(only_baseline_right: int, only_candidate_right: int, refused_only_by_candidate: int,
            alpha: float = ALPHA) -> dict:
    p = metrics.mcnemar_exact(only_baseline_right, only_candidate_right)
    significant = p < alpha
    less_accurate = significant and only_baseline_right > only_candidate_right
    worse = less_accurate or refused_only_by_candidate > 0
    better = significant and only_candidate_right > only_baseline_right and not worse
    if refused_only_by_candidate:
        text = f"candidate refuses {refused_only_by_candidate} image(s) the baseline answers"
    elif significant:
        text = f"candidate significantly {'worse' if less_accurate else 'better'} (p = {p:.4g} < {alpha})"
    else:
        text = f"no significant difference (p = {p:.4g} >= {alpha})"
    return {"p_value": p, "alpha": alpha, "candidate_worse": worse, "candidate_better": better, "text": text}


def report(comparison: Comparison, alpha: float = ALPHA) -> dict:
    base, cand = comparison.baseline, comparison.candidate
    both = comparison.both_answered()
    only_base = sum(1 for a, b in both if a.correct and not b.correct)
    only_cand = sum(1 for a, b in both if b.correct and not a.correct)
    refused_only = {"baseline": [a.source for a, b in comparison.pairs() if not a.ok and b.ok],
                    "candidate": [b.source for a, b in comparison.pairs() if a.ok and not b.ok]}
    agree = sum(1 for a, b in both if a.prediction.label == b.prediction.label)
    return {
        **outputs.context("compare", base.target, base.started),
        "model": base.target.model,
        "data": {"dir": os.path.abspath(base.folder.root), "classes": base.folder.classes,
                 "images": len(base.folder.files)},
        "baseline": _side(base, both, True),
        "candidate": _side(cand, both, False),
        "both_answered": len(both),
        "agreement": {"agreed": agree, "total": len(both), "rate": metrics.ratio(agree, len(both))},
        "mcnemar": {"only_baseline_right": only_base, "only_candidate_right": only_cand,
                    "both_right": sum(1 for a, b in both if a.correct and b.correct),
                    "both_wrong": sum(1 for a, b in both if not a.correct and not b.correct)},
        "refused_only_by": refused_only,
        "verdict": verdict(only_base, only_cand, len(refused_only["candidate"]), alpha),
        "disagreements": [{"source": a.source, "true": a.true, "baseline": a.prediction.label,
                           "baseline_probability": a.confidence, "candidate": b.prediction.label,
                           "candidate_probability": b.confidence} for a, b in comparison.disagreements()],
        "seconds": round(base.seconds + cand.seconds, 3),
    }


def _name(evaluation: Evaluation) -> str:
    """E.g. "stable (v1)" or "v2": short enough for a caption."""
    version = f"v{evaluation.served.version}"
    return f"{evaluation.target.label} ({version})" if evaluation.target.label else version


def write(comparison: Comparison, document: dict, directory: str) -> list[str]:
    from client.evaluation import figures as plots

    outputs.prepare_output_dir(directory)
    base, cand = _name(comparison.baseline), _name(comparison.candidate)
    plots.image_grid_png(
        [(a.source, f"true {a.true}\n{base}: {a.prediction.label} {a.confidence:.3f}\n"
                    f"{cand}: {b.prediction.label} {b.confidence:.3f}")
         for a, b in comparison.disagreements()[:DISAGREEMENTS_SHOWN]],
        os.path.join(directory, "disagreements.png"), f"{comparison.baseline.target.model}: {base} vs {cand}")
    outputs.write_jsonl(os.path.join(directory, outputs.PREDICTIONS_FILE),
                        ({"source": a.source, "true": a.true, "baseline": a.to_dict(), "candidate": b.to_dict()}
                         for a, b in comparison.pairs()))
    document["outputs"] = {"disagreements": "disagreements.png", "predictions": outputs.PREDICTIONS_FILE}
    outputs.write_json(os.path.join(directory, outputs.REPORT_FILE), document)
    return [outputs.REPORT_FILE, *document["outputs"].values()]


def default_output_dir(comparison: Comparison) -> str:
    base, cand = comparison.baseline, comparison.candidate
    return outputs.default_output_dir("compare", base.target.model,
                                      [base.target.slug(base.served.version), "vs",
                                       cand.target.slug(cand.served.version)], base.started)


def summary(document: dict, baseline_name: str, candidate_name: str) -> list[str]:
    def accuracy(side):
        a = side["accuracy"]
        interval = f"[{a['interval_95'][0]:.4f}, {a['interval_95'][1]:.4f}]" if a["interval_95"] else "-"
        return f"{a['value']:.4f} {interval}" if a["value"] is not None else "-"

    b, c, m = document["baseline"], document["candidate"], document["mcnemar"]
    width = max(len(baseline_name), len(candidate_name), 28)
    rows = [("", baseline_name, candidate_name),
            ("version", str(b["version"]), str(c["version"])),
            ("accuracy [95% interval]", accuracy(b), accuracy(c)),
            ("right where the other is wrong", str(m["only_baseline_right"]), str(m["only_candidate_right"])),
            ("refused", str(b["refused"]), str(c["refused"])),
            ("refused, the other answered", str(len(document["refused_only_by"]["baseline"])),
             str(len(document["refused_only_by"]["candidate"])))]
    lines = [f"{label:<32} {x:<{width}} {y:<{width}}".rstrip() for label, x, y in rows]
    agreement = document["agreement"]
    rate = f"{agreement['rate']:.4f}" if agreement["rate"] is not None else "-"
    lines += [f"{'images answered by both':<32} {document['both_answered']} of {document['data']['images']}",
              f"{'agreement':<32} {rate} ({agreement['agreed']} of {agreement['total']})",
              f"{'McNemar exact, two-sided':<32} p = {document['verdict']['p_value']:.4g}",
              f"{'verdict':<32} {document['verdict']['text']}"]
    return lines

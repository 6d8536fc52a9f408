"""What the served model is and which classes it knows, through TF Serving's public API only.

TF Serving exposes no label file: GetModelMetadata returns the signatures, not the assets.
So the evaluation learns the classes in two steps:

* before any Predict, GetModelMetadata gives the version behind the requested label or
  "latest" (its model_spec), the signature, and the number of classes (the static last
  dimension of the `probabilities` output): a folder with more classes than that is an
  error before any image is sent;
* every answer carries both the class index and its label string (the `classes` and
  `labels` outputs), so each answer teaches one index -> name pair. Once every index has a
  name, a folder class that is not among them is an error. The evaluation sends one first
  round of images that mixes all folder classes, so a wrong folder is usually refused
  after that round, before the rest is sent.

An index the model never answers keeps no name: a folder class that never came back as an
answer is then reported as "unconfirmed" (its images count as mistakes), unless there are
more such classes than unanswered indices, which is an error.
"""
from __future__ import annotations

from dataclasses import dataclass

from client.evaluation.folder import EvaluationError
from client.results import Prediction
from model_api import signature as sig

REQUIRED_OUTPUTS = (sig.OUTPUT_PROBABILITIES, sig.OUTPUT_CLASSES, sig.OUTPUT_LABELS)


@dataclass
class ServedModel:
    name: str
    version: int | None       # what the server resolved the request's version or label to
    signature_name: str
    signature: dict           # {"inputs"|"outputs": {key: {"dtype", "shape"}}, "method_name"}
    num_classes: int | None   # None when `probabilities` has no static class dimension


def _tensor_summary(info: dict) -> dict:
    dims = info.get("tensor_shape", {}).get("dim", [])
    shape = None if info.get("tensor_shape", {}).get("unknown_rank") else [int(d.get("size", -1)) for d in dims]
    return {"dtype": info.get("dtype"), "shape": shape}


def describe(metadata: dict, signature_name: str | None) -> ServedModel:
    """Read a GetModelMetadata answer (the client's dict, the same over gRPC and REST)."""
    signature_name = signature_name or sig.SERVING_DEFAULT
    spec = metadata.get("model_spec", {})
    signatures = metadata.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
    if signature_name not in signatures:
        raise EvaluationError(f"the model has no signature {signature_name!r} "
                              f"(it has: {', '.join(sorted(signatures)) or 'none'})")
    definition = signatures[signature_name]
    inputs = {k: _tensor_summary(v) for k, v in definition.get("inputs", {}).items()}
    outputs = {k: _tensor_summary(v) for k, v in definition.get("outputs", {}).items()}
    if sig.INPUT_IMAGE_BYTES not in inputs:
        raise EvaluationError(f"signature {signature_name!r} takes {', '.join(inputs) or 'nothing'}, "
                              f"not {sig.INPUT_IMAGE_BYTES!r} (encoded images)")
    missing = [k for k in REQUIRED_OUTPUTS if k not in outputs]
    if missing:
        raise EvaluationError(f"signature {signature_name!r} lacks the output(s) {', '.join(missing)}")
    shape = outputs[sig.OUTPUT_PROBABILITIES]["shape"]
    num_classes = shape[-1] if shape and shape[-1] > 0 else None
    version = int(spec["version"]) if spec.get("version") not in (None, "") else None
    return ServedModel(spec.get("name", ""), version, signature_name,
                       {"inputs": inputs, "outputs": outputs, "method_name": definition.get("method_name")},
                       num_classes)


class ModelClasses:
    """The model's index -> label pairs, as its answers reveal them."""

    def __init__(self, num_classes: int | None):
        self.num_classes = num_classes
        self.names: dict[int, str] = {}

    def learn(self, predictions: list[Prediction]) -> None:
        for p in predictions:
            if not p.ok or p.class_index is None:
                continue
            known = self.names.setdefault(p.class_index, p.label)
            if known != p.label:
                raise EvaluationError(f"the server answered class {p.class_index} both as {known!r} "
                                      f"and as {p.label!r}: its labels changed during the run")

    @property
    def complete(self) -> bool:
        return self.num_classes is not None and len(self.names) >= self.num_classes

    @property
    def labels(self) -> list[str]:
        """Known labels in the model's index order."""
        return [self.names[i] for i in sorted(self.names)]

    def check_count(self, folder_classes: list[str]) -> None:
        """Before any Predict: the folder cannot have more classes than the model outputs."""
        if self.num_classes is not None and len(folder_classes) > self.num_classes:
            raise EvaluationError(f"the folder has {len(folder_classes)} classes ({', '.join(folder_classes)}) "
                                  f"but the model outputs {self.num_classes}")

    def check_folder(self, folder_classes: list[str], final: bool) -> list[str]:
        """Folder classes the model does not know are an error as soon as that is certain;
        returns the classes that stay unconfirmed (never answered) when `final`."""
        unknown = [c for c in folder_classes if c not in self.names.values()]
        if not unknown:
            return []
        unanswered = None if self.num_classes is None else self.num_classes - len(self.names)
        if self.complete or (final and unanswered is not None and len(unknown) > unanswered):
            known = (', '.join(self.labels) if self.complete else
                     f"answers named only {', '.join(self.labels)}; {unanswered} of {self.num_classes} never answered")
            raise EvaluationError(f"folder class(es) {', '.join(unknown)} not among the model's classes ({known})")
        return unknown if final else []

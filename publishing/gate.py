"""The validation gate a staged version must pass before it is published: its accuracy as served, then
TF Serving's own loading path, warmup replay and parity with the Keras model (docs/export.md)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model_api import signature as sig
from model_api.decision import probabilities_from_logits
from model_api.session_bundle import BundleError, SessionBundle
from model_api.tf_errors import clean_tf_message
from model_api.versions import join, version_paths
from model_api.warmup import WarmupError, read_predict_requests
from publishing import storage

PARITY_TOLERANCE = 1e-4


def say(message: str) -> None:
    print(message, flush=True)  # a progress line, in order with TF's logging when piped


class GateFailed(RuntimeError):
    """A validation check failed; nothing new was published."""

    def __init__(self, check: str, reason: str):
        super().__init__(f"validation gate failed at '{check}': {reason}; nothing was published")
        self.check = check
        self.reason = reason


@dataclass
class Gate:
    """What a version is checked against; its accuracy, data and split are also what its model card states."""
    test_accuracy: float | None
    min_accuracy: float = 0.0
    max_regression: float = 0.01
    force: bool = False
    data_identity: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)
    warmup_images: list = field(default_factory=list)  # encoded images classified for parity
    reference_logits: np.ndarray | None = None  # the Keras model's logits on them


def short_fingerprint(fingerprint: str | None) -> str:
    """`sha256:` and the first 12 hex digits: enough to tell two folders apart in one line."""
    return f"{fingerprint[:19]}…" if fingerprint and len(fingerprint) > 19 else str(fingerprint)


def describe_data(identity: dict | None) -> str:
    """A data identity (training/data_identity.py) in a few words: enough to tell two apart in one line."""
    if not identity:
        return "no data fingerprint"
    if identity.get("kind") == "folder":
        return f"folder of {identity.get('files')} files, {short_fingerprint(identity.get('fingerprint'))}"
    return str(identity.get("fingerprint", "unknown data"))


def _reason(err: BaseException, limit: int = 300) -> str:
    """What went wrong, in one line (model_api/tf_errors.py drops TF's preamble and node name)."""
    return f"{type(err).__name__}: {clean_tf_message(str(getattr(err, 'message', None) or err))[:limit]}"


# --- 1. accuracy ------------------------------------------------------------------------

def newest_card(model_dir: str) -> tuple[int, dict] | None:
    import tensorflow as tf

    paths = version_paths(model_dir)  # a version's real folder: "00001/" is version 1
    for version in sorted(paths, reverse=True):
        path = join(paths[version], sig.MODEL_CARD_FILE)
        if tf.io.gfile.exists(path):
            return version, storage.read_json(path)
    return None


def _comparable(card: dict, gate: Gate, version: int) -> str | None:
    """None when `card` was tested like this export; else why the gate compares nothing."""
    theirs = card.get("data_identity")
    if not theirs:
        return f"version {version}'s model card has no data fingerprint"
    if theirs.get("fingerprint") != gate.data_identity.get("fingerprint"):
        return (f"version {version} was tested on other data ({describe_data(theirs)}; "
                f"this export: {describe_data(gate.data_identity)})")
    if card.get("split") != gate.split:
        return f"version {version} was tested on another split ({card.get('split')}; this export: {gate.split})"
    if (card.get("test_metrics") or {}).get("accuracy") is None:
        return f"version {version}'s model card has no test accuracy"
    return None


def check_accuracy(gate: Gate, model_dir: str) -> dict:
    """Gate check 1: the test accuracy (as served) meets --min-accuracy and does not regress by more than
    --max-regression from the newest published version tested on the same data and split."""
    report = {"test_accuracy": gate.test_accuracy, "min_accuracy": gate.min_accuracy}
    problems = []
    accuracy = gate.test_accuracy if gate.test_accuracy is not None else float("nan")
    if not accuracy >= gate.min_accuracy:
        problems.append(f"test accuracy {accuracy:.4f} is below --min-accuracy {gate.min_accuracy:.4f}")
    previous = newest_card(model_dir)
    if previous is None:
        report["regression"] = "not applicable: no published version"
    else:
        version, card = previous
        why_not = _comparable(card, gate, version)
        if why_not:
            report["regression"] = f"compared nothing: {why_not}"
            say(f"[export] the regression gate compared nothing: {why_not}")
        else:
            previous_accuracy = card["test_metrics"]["accuracy"]
            report["regression"] = {"previous_version": version, "previous_accuracy": previous_accuracy,
                                    "max_regression": gate.max_regression}
            if accuracy < previous_accuracy - gate.max_regression:
                problems.append(f"test accuracy {accuracy:.4f} is more than {gate.max_regression} below "
                                f"version {version}'s {previous_accuracy:.4f}")
    if problems:
        if not gate.force:
            raise GateFailed("accuracy", "; ".join(problems))
        report["forced"] = "; ".join(problems)
        say(f"[export] --force: publishing although {report['forced']}")
    return report


# --- 2. servable, through TF Serving's loading path ------------------------------------------

def check_servable(staged: str, gate: Gate) -> dict:
    """Gate check 2: load as a SavedModelBundle in a Session with its init op run, as TF Serving does
    (model_api/session_bundle.py), not by TF2 object loading; check the contract, replay warmup, compare."""
    try:
        bundle = SessionBundle(staged)
    except BundleError as err:
        raise GateFailed("load", f"TF Serving's session loader cannot serve it: {err}") from None
    except Exception as err:  # noqa: BLE001 - any load failure fails the gate, with its reason
        raise GateFailed("load", f"TF Serving's session loader (SavedModelBundle) cannot load it: "
                                 f"{_reason(err)}") from None
    try:
        check_signatures(bundle.signature_defs)
        report = {"loader": "SavedModelBundle session (as TF Serving)",
                  "warmup_requests": replay_warmup(bundle, join(staged, sig.WARMUP_FILE))}
        if gate.reference_logits is not None and len(gate.warmup_images):
            report.update(check_parity(bundle, gate.warmup_images, gate.reference_logits))
        return report
    finally:
        bundle.close()


def check_signatures(signature_defs: dict) -> None:
    """The contract of model_api/signature.py, as the SignatureDefs TF Serving reads state it."""
    default = signature_defs.get(sig.SERVING_DEFAULT)
    if default is None:
        raise GateFailed("signature", f"no {sig.SERVING_DEFAULT} SignatureDef (has {sorted(signature_defs)})")
    if default.method_name != sig.PREDICT_METHOD:
        raise GateFailed("signature", f"{sig.SERVING_DEFAULT} has method {default.method_name!r}, "
                                      f"expected {sig.PREDICT_METHOD!r}")
    if set(default.inputs) != {sig.INPUT_IMAGE_BYTES}:
        raise GateFailed("signature", f"{sig.SERVING_DEFAULT} inputs are {sorted(default.inputs)}, "
                                      f"expected ['{sig.INPUT_IMAGE_BYTES}']")
    if set(default.outputs) != set(sig.OUTPUT_KEYS):
        raise GateFailed("signature", f"{sig.SERVING_DEFAULT} outputs are {sorted(default.outputs)}, "
                                      f"expected {sorted(sig.OUTPUT_KEYS)}")
    if sig.PREDICT_IMAGES not in signature_defs:
        raise GateFailed("signature", f"no {sig.PREDICT_IMAGES} SignatureDef")


def _warmup_requests(path: str) -> list:
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        raise GateFailed("warmup", f"no warmup file {sig.WARMUP_FILE}")
    try:
        requests = read_predict_requests(path)
    except WarmupError as err:  # TF Serving would refuse to load such a version
        raise GateFailed("warmup", str(err)) from None
    if not requests:
        raise GateFailed("warmup", "the warmup file holds no requests")
    return requests


def replay_warmup(bundle: SessionBundle, path: str) -> int:
    """Run every PredictLog record as TF Serving's RunPredict would, by tensor names (servables/tensorflow/
    saved_model_warmup.cc; at most 1000 records: saved_model_warmup_util.h)."""
    import tensorflow as tf

    requests = _warmup_requests(path)
    for number, request in enumerate(requests, start=1):
        name = request.model_spec.signature_name or sig.SERVING_DEFAULT
        signature = bundle.signature_defs.get(name)
        if signature is None:
            raise GateFailed("warmup", f"warmup record {number} asks for signature {name!r}, which is not there")
        unknown = sorted(set(request.inputs) - set(signature.inputs))
        if unknown:
            raise GateFailed("warmup", f"warmup record {number} feeds {unknown}, not inputs of {name!r}")
        inputs = {alias: tf.make_ndarray(tensor) for alias, tensor in request.inputs.items()}
        try:
            bundle.run(name, inputs, list(request.output_filter) or None)
        except Exception as err:  # noqa: BLE001 - TF Serving would refuse to load the version
            raise GateFailed("warmup", f"warmup record {number} failed in TF Serving's session path: "
                                       f"{_reason(err)}") from None
    return len(requests)


def check_parity(bundle: SessionBundle, images: list[bytes], reference_logits: np.ndarray) -> dict:
    """The served logits and probabilities equal the Keras model's within PARITY_TOLERANCE."""
    try:
        served = bundle.run(sig.SERVING_DEFAULT, {sig.INPUT_IMAGE_BYTES: np.array(images, dtype=object)})
    except Exception as err:  # noqa: BLE001
        raise GateFailed("parity", f"classifying the validation images failed: {_reason(err)}") from None
    reference_logits = np.asarray(reference_logits, dtype=np.float64)
    difference = max(
        float(np.max(np.abs(served[sig.OUTPUT_LOGITS] - reference_logits))),
        float(np.max(np.abs(served[sig.OUTPUT_PROBABILITIES] - probabilities_from_logits(reference_logits)))))
    if not difference <= PARITY_TOLERANCE:
        raise GateFailed("parity", f"the served logits or probabilities differ from the Keras model's by "
                                   f"{difference:.2e} (> {PARITY_TOLERANCE})")
    return {"parity_images": len(images), "parity_max_abs_difference": difference}

"""Publish a version under `<base>/<name>/<n>/` only after it proves itself, atomically.

TF Serving polls the model directory and loads any integer-named child it finds, so a
half-written export (tensorflow/serving#631, #1086) or a worse model must never appear
there. The version is written into a staging folder in the same model directory (same
filesystem, a name TF Serving ignores because it is not an integer), flushed to disk,
checked by the gate, then renamed to its version number. A crash at any moment leaves
either no new version or a complete one. One exporter per model at a time: staging folders
left by a killed export are removed by the next one.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from model_api import signature as sig
from model_api.versions import STAGING_PREFIX, list_versions, next_version, version_dir

PARITY_TOLERANCE = 1e-4


class PublishError(RuntimeError):
    """The version cannot be published (it exists already, the base path is unusable)."""


class GateFailed(RuntimeError):
    """A validation check failed; nothing new was published."""

    def __init__(self, check: str, reason: str):
        super().__init__(f"validation gate failed at '{check}': {reason}; nothing was published")
        self.check = check
        self.reason = reason


@dataclass
class Gate:
    test_accuracy: float | None
    min_accuracy: float = 0.0
    max_regression: float = 0.01
    force: bool = False
    dataset: str = ""
    split: dict = field(default_factory=dict)
    warmup_images: list = field(default_factory=list)
    reference_probabilities: np.ndarray | None = None


def _fsync_tree(root: str) -> None:
    for current, dirs, files in os.walk(root, topdown=False):
        for name in files:
            with open(os.path.join(current, name), "rb") as f:
                os.fsync(f.fileno())
        fd = os.open(current, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_staging(model_dir: str) -> list[str]:
    removed = []
    if os.path.isdir(model_dir):
        for name in os.listdir(model_dir):
            if name.startswith(STAGING_PREFIX):
                shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)
                removed.append(name)
    return removed


def newest_card(model_dir: str) -> tuple[int, dict] | None:
    for version in reversed(list_versions(model_dir)):
        path = os.path.join(model_dir, str(version), sig.MODEL_CARD_FILE)
        if os.path.exists(path):
            with open(path) as f:
                return version, json.load(f)
    return None


def check_accuracy(gate: Gate, model_dir: str) -> dict:
    """Gate check 1: the test accuracy meets --min-accuracy and does not regress."""
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
        same = card.get("dataset") == gate.dataset and card.get("split") == gate.split
        previous_accuracy = (card.get("test_metrics") or {}).get("accuracy")
        if not same or previous_accuracy is None:
            report["regression"] = f"not applicable: version {version} was tested on other data or split"
        else:
            report["regression"] = {"previous_version": version, "previous_accuracy": previous_accuracy,
                                    "max_regression": gate.max_regression}
            if accuracy < previous_accuracy - gate.max_regression:
                problems.append(f"test accuracy {accuracy:.4f} is more than {gate.max_regression} below "
                                f"version {version}'s {previous_accuracy:.4f}")
    if problems:
        if not gate.force:
            raise GateFailed("accuracy", "; ".join(problems))
        report["forced"] = "; ".join(problems)
        print(f"[export] --force: publishing although {report['forced']}", flush=True)
    return report


def check_servable(staged: str, gate: Gate) -> dict:
    """Gate check 2: the staged SavedModel, loaded back from disk, has the contract's
    signature, answers its warmup requests, and matches the Keras model within 1e-4."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    try:
        loaded = tf.saved_model.load(staged)
    except Exception as err:  # noqa: BLE001 - any load failure fails the gate
        raise GateFailed("load", f"the staged SavedModel does not load: {err}") from err
    if sig.SERVING_DEFAULT not in loaded.signatures:
        raise GateFailed("signature", f"no {sig.SERVING_DEFAULT} signature")
    serve = loaded.signatures[sig.SERVING_DEFAULT]
    outputs = set(serve.structured_outputs)
    if outputs != set(sig.OUTPUT_KEYS):
        raise GateFailed("signature", f"outputs are {sorted(outputs)}, expected {sorted(sig.OUTPUT_KEYS)}")
    answered = 0
    for record in tf.data.TFRecordDataset(os.path.join(staged, sig.WARMUP_FILE)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        tensor = tf.make_ndarray(log.predict_log.request.inputs[sig.INPUT_IMAGE_BYTES])
        try:
            result = serve(**{sig.INPUT_IMAGE_BYTES: tf.constant(tensor)})
        except Exception as err:  # noqa: BLE001
            raise GateFailed("warmup", f"warmup request {answered + 1} failed: {err}") from err
        if result[sig.OUTPUT_PROBABILITIES].shape[0] != len(tensor):
            raise GateFailed("warmup", f"warmup request {answered + 1} answered the wrong number of rows")
        answered += 1
    if answered == 0:
        raise GateFailed("warmup", "the warmup file holds no requests")
    report = {"warmup_requests": answered}
    if gate.reference_probabilities is not None and len(gate.warmup_images):
        got = serve(**{sig.INPUT_IMAGE_BYTES: tf.constant(gate.warmup_images)})[sig.OUTPUT_PROBABILITIES].numpy()
        difference = float(np.max(np.abs(got - gate.reference_probabilities)))
        report["parity_max_abs_difference"] = difference
        if not difference <= PARITY_TOLERANCE:
            raise GateFailed("parity", f"SavedModel probabilities differ from the Keras model's by {difference:.2e} "
                                       f"(> {PARITY_TOLERANCE})")
    return report


def publish(base_path: str, model_name: str, write: Callable[[str, int], None], gate: Gate,
            version: int | None = None, keep: int = 0, serving_config: str | None = None) -> dict:
    """Stage with `write(directory, version)`, run the gate, rename into place; prune with keep."""
    model_dir = os.path.join(base_path, model_name)
    os.makedirs(model_dir, exist_ok=True)
    stale = remove_stale_staging(model_dir)
    if stale:
        print(f"[export] removed stale staging folders: {', '.join(stale)}", flush=True)
    version = int(version) if version else next_version(model_dir)
    final = version_dir(base_path, model_name, version)
    if final.exists():
        raise PublishError(f"version {version} already exists at {final}; versions are never overwritten")
    accuracy_report = check_accuracy(gate, model_dir)
    staging = os.path.join(model_dir, f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
    try:
        print(f"[export] writing {model_name} version {version} into {staging}", flush=True)
        write(staging, version)
        _fsync_tree(staging)
        servable_report = check_servable(staging, gate)
        if final.exists():  # another exporter won the race meanwhile
            raise PublishError(f"version {version} appeared at {final} while exporting; not overwritten")
        os.rename(staging, final)
        fd = os.open(model_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
    print(f"[export] published {final}", flush=True)
    removed = prune(model_dir, keep, protected_versions(serving_config, model_name)) if keep else []
    return {"version": version, "path": str(final), "gate": {**accuracy_report, **servable_report},
            "removed_versions": removed}


def protected_versions(serving_config: str | None, model_name: str) -> set[int]:
    """Versions a TF Serving models.config points a label at (they must never be pruned)."""
    if not serving_config:
        return set()
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(serving_config) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    protected = set()
    for model in config.model_config_list.config:
        if model.name == model_name:
            protected.update(int(v) for v in model.version_labels.values())
            protected.update(int(v) for v in model.model_version_policy.specific.versions)
    return protected


def prune(model_dir: str, keep: int, protected: set[int]) -> list[int]:
    """Remove all but the newest `keep` versions, never a protected one. Each is renamed
    away first (TF Serving then unloads it whole) and deleted afterwards."""
    versions = list_versions(model_dir)
    doomed = [v for v in versions[:-keep] if v not in protected] if keep > 0 else []
    for v in doomed:
        trash = os.path.join(model_dir, f"{STAGING_PREFIX}deleting-{v}-{uuid.uuid4().hex[:6]}")
        os.rename(os.path.join(model_dir, str(v)), trash)
        shutil.rmtree(trash, ignore_errors=True)
    if doomed:
        print(f"[export] removed old versions {doomed} (--keep {keep})", flush=True)
    return doomed

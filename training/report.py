"""What a run reports: metrics.json, the tutorial's learning curves and a grid of test images (matplotlib's
Agg backend, written through tf.io.gfile, so the work dir may be gs://, s3:// or ram://)."""
from __future__ import annotations

import io
import platform
import posixpath
from dataclasses import asdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from model_api import decision  # noqa: E402
from publishing import storage  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import Datasets  # noqa: E402
from training.phases import PhaseResult  # noqa: E402


def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "tensorflow-datasets", "numpy", "tensorflow-serving-api"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_metrics(config: TrainConfig, data: Datasets, phases: list[PhaseResult], extra: dict | None = None) -> dict:
    """metrics.json. `extra` holds accuracy_by_tta when measured; "served" is then the accuracy of the model
    as exported with the run's --tta (decision.served_accuracy: what the model card states and the gate checks)."""
    metrics = {
        "data": {
            "source": data.source,
            "identity": data.identity,  # what was trained and tested on, by content (training/data_identity.py)
            "class_names": data.class_names,
            "splits": {name: {"images": split.count, "skipped": split.skipped,
                              "skipped_files": [{"path": p, "reason": r} for p, r in split.skipped_files]}
                       for name, split in data.splits().items()},
        },
        "phases": {p.name: asdict(p) for p in phases},
        "test_accuracy": {p.name: p.test_accuracy for p in phases},
        "config": config.to_dict(),
        "versions": library_versions(),
        **(extra or {}),
    }
    metrics["served"] = {"tta": config.tta, **{f"{split}_accuracy": decision.served_accuracy(metrics, config.tta, split)
                                               for split in ("validation", "test")}}
    return metrics


def accuracy_by_tta(model, data: Datasets, config: TrainConfig) -> dict[str, dict[str, float]]:
    """{"validation"|"test": {tta: accuracy}}: what the exported signature would score on each
    split with each `--tta` choice (decision.combine_tta, decision.classes_from_logits). Training
    does not depend on --tta, so this lets a study choose it on validation without retraining.
    The model runs once per batch, on the images and their mirrors together."""
    import tensorflow as tf

    from training.config import TTA_CHOICES
    from training.pipeline import image_batches

    # model(...) traced into a graph, as TF Serving runs the signature; not predict() (it breaks under
    # multi-worker), nor eagerly (layer by layer: a 6,000-photo run's whole report took 40 s, traced 19 s).
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    accuracies = {}
    for name, split in (("validation", data.validation), ("test", data.test)):
        if not split.count:
            continue
        correct = dict.fromkeys(TTA_CHOICES, 0)
        for images, labels in image_batches(split.images, config):  # the tutorial's pipeline, in order
            both = forward(tf.concat([images, decision.mirror(images)], axis=0))
            logits, mirrored = tf.split(tf.cast(both, tf.float32), 2, axis=0)
            for tta in TTA_CHOICES:
                classes = decision.classes_from_logits(decision.combine_tta(logits, mirrored, tta))
                correct[tta] += int(np.sum(classes.numpy() == labels.numpy()))
        accuracies[name] = {tta: correct[tta] / split.count for tta in TTA_CHOICES}
    return accuracies


def write_metrics(work_dir: str, metrics: dict) -> str:
    path = posixpath.join(work_dir, "metrics.json")
    storage.replace_json(path, metrics, default=float)
    return path


def _save_figure(fig, path: str) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes(path, buffer.getvalue())


CURVES = ("accuracy", "val_accuracy", "loss", "val_loss")


def curve_points(phases: list[PhaseResult]) -> dict[str, tuple[list[int], list[float]]]:
    """(epochs, values) of each curve: a phase's i-th epoch is job epoch first_epoch + 1 + i
    (1-based), so a phase that stopped early leaves a gap rather than shifting the next one."""
    points = {key: ([], []) for key in CURVES}
    for phase in phases:
        for key, (epochs, values) in points.items():
            history = phase.history.get(key, [])
            epochs.extend(phase.first_epoch + 1 + i for i in range(len(history)))
            values.extend(history)
    return points


def fine_tuning_line(phases: list[PhaseResult]) -> float | None:
    """Where 'Start Fine Tuning' is drawn: just before phase 2's first epoch."""
    if len(phases) > 1 and phases[1].epochs:
        return phases[1].first_epoch + 0.5
    return None


def plot_learning_curves(phases: list[PhaseResult], path: str) -> str:
    """The tutorial's figure: accuracy and cross-entropy per epoch, with a 'Start Fine Tuning' line."""
    points = curve_points(phases)
    fig, (ax_acc, ax_loss) = plt.subplots(2, 1, figsize=(8, 8), sharex=True)
    for ax, key, title in ((ax_acc, "accuracy", "Training and Validation Accuracy"),
                           (ax_loss, "loss", "Training and Validation Loss")):
        ax.plot(*points[key], label=f"Training {key.title()}")
        if points["val_" + key][1]:
            ax.plot(*points["val_" + key], label=f"Validation {key.title()}")
        ax.set_title(title)
        ax.set_ylabel("Cross Entropy" if key == "loss" else "Accuracy")
        ax.grid(alpha=0.3)
    start = fine_tuning_line(phases)
    if start is not None:
        for ax in (ax_acc, ax_loss):
            ax.axvline(start, color="green", linestyle="--", label="Start Fine Tuning")
    for ax in (ax_acc, ax_loss):
        ax.legend(loc="best")
    ax_loss.set_xlabel("epoch")
    fig.tight_layout()
    _save_figure(fig, path)
    return path


def plot_samples(images: np.ndarray, true_labels, predicted_labels, probabilities, path: str) -> str:
    """A grid of test images titled 'predicted (p) / true', red where they differ."""
    n = len(images)
    cols = min(4, n) or 1
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, true, pred, prob in zip(axes.flat, images, true_labels, predicted_labels, probabilities):
        ax.imshow(image.astype("uint8"))
        ax.set_title(f"{pred} ({prob:.2f}) / {true}", color="black" if pred == true else "red", fontsize=10)
    fig.suptitle("predicted (probability) / true")
    fig.tight_layout()
    _save_figure(fig, path)
    return path


def plot_test_samples(model, data: Datasets, config: TrainConfig, path: str, count: int = 12) -> str | None:
    """The model's decisions as served (model_api/decision.py, with --tta) on the first `count` test images."""
    from model_api.preprocess import format_example

    samples = [(image.numpy(), int(label)) for image, label in data.test.images.take(count)]
    if not samples:
        return None
    inputs = np.stack([format_example(image, config.img_size).numpy() for image, _ in samples])
    logits = decision.served_logits(model, inputs, config.tta).numpy()  # predict() breaks under multi-worker
    probabilities = decision.probabilities_from_logits(logits)
    predicted = decision.classes_from_logits(logits).numpy()
    return plot_samples([image for image, _ in samples], [data.class_names[label] for _, label in samples],
                        [data.class_names[p] for p in predicted], probabilities[np.arange(len(samples)), predicted],
                        path)

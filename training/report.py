"""What a run reports: metrics.json, the tutorial's learning curves, and a grid of test images.

Figures are written with matplotlib's Agg backend and never shown.
"""
from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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
    return {
        "data": {
            "source": data.source,
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


def write_metrics(work_dir: str, metrics: dict) -> str:
    path = os.path.join(work_dir, "metrics.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(metrics, f, indent=2, default=float)
    os.replace(tmp, path)
    return path


def plot_learning_curves(phases: list[PhaseResult], path: str) -> str:
    """The tutorial's figure: accuracy and cross-entropy per epoch, with a 'Start Fine Tuning' line."""
    series = {k: [] for k in ("accuracy", "val_accuracy", "loss", "val_loss")}
    for phase in phases:
        for key in series:
            series[key].extend(phase.history.get(key, []))
    epochs = np.arange(1, len(series["loss"]) + 1)
    fig, (ax_acc, ax_loss) = plt.subplots(2, 1, figsize=(8, 8), sharex=True)
    for ax, key, title in ((ax_acc, "accuracy", "Training and Validation Accuracy"),
                           (ax_loss, "loss", "Training and Validation Loss")):
        ax.plot(epochs[:len(series[key])], series[key], label=f"Training {key.title()}")
        if series["val_" + key]:
            ax.plot(epochs[:len(series["val_" + key])], series["val_" + key], label=f"Validation {key.title()}")
        ax.set_title(title)
        ax.set_ylabel("Cross Entropy" if key == "loss" else "Accuracy")
        ax.grid(alpha=0.3)
    if len(phases) > 1 and phases[1].epochs:
        for ax in (ax_acc, ax_loss):
            ax.axvline(phases[1].first_epoch + 0.5, color="green", linestyle="--", label="Start Fine Tuning")
    for ax in (ax_acc, ax_loss):
        ax.legend(loc="best")
    ax_loss.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
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
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

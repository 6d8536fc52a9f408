"""Resumable phases: a tf.train checkpoint of the full model and optimizer after every epoch, beside the
phase's history, seconds and settings, and the rules for resuming (docs/training.md, "Resuming").

Not Keras' BackupAndRestore, which backs up one `fit` of one model on one dataset: each phase trains a
different sub-model (the head on cached features, the top and head on the cached trunk, or the whole
model), and every epoch is a new `fit` on a new dataset (that epoch's seeded shuffle and view draw).
TensorFlow writes a checkpoint before it updates the `checkpoint` index, so a killed process leaves
the previous checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Callable

import keras
import tensorflow as tf

from publishing import storage
from publishing.gate import short_fingerprint
from training.config import RUN, TrainConfig, data_flag, flag, settings

# The phases' names: their checkpoint folders, metrics.json keys and progress-line prefixes.
PHASES = FEATURE_EXTRACTION, FINE_TUNING = ("feature_extraction", "fine_tuning")
PHASE_EPOCHS = {FEATURE_EXTRACTION: "epochs", FINE_TUNING: "fine_tune_epochs"}  # each phase's epoch count
DATA_FINGERPRINT = "data_fingerprint"  # the phase setting (and cache setting) that is the data's content


class ResumeConflict(RuntimeError):
    """The work dir holds a run that this configuration cannot continue."""


@dataclass
class Resumed:
    epoch: int = 0  # completed epochs, counted from the job's first epoch (fit's initial_epoch)
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # spent by earlier processes: cache, train, evaluate


def phase_dir(work_dir: str, phase: str) -> str:
    return posixpath.join(work_dir, "checkpoints", phase)


def phase_settings(config: TrainConfig, phase: str, workers: int, fingerprint: str | None) -> dict:
    """What must match for `phase` to resume: the RUN settings, the number of workers and the data's
    `fingerprint`. Phase 2 also starts from phase 1's last epoch."""
    wanted = {**settings(config, RUN), "workers": workers, DATA_FINGERPRINT: fingerprint}
    if phase == FINE_TUNING:
        wanted["epochs"] = config.epochs
    if config.lr_schedule != "constant":  # the schedule spans the phase's epochs: more of them change every rate
        name = PHASE_EPOCHS[phase]
        wanted[name] = getattr(config, name)
    return wanted


def _latest(directory: str) -> tuple[int, str] | None:
    path = tf.train.latest_checkpoint(directory) if tf.io.gfile.isdir(directory) else None
    if not path:
        return None
    return int(re.search(r"ckpt-(\d+)$", path).group(1)), path


def _state_path(directory: str, epoch: int) -> str:
    return posixpath.join(directory, f"state-{epoch}.json")


def _read_state(directory: str) -> tuple[int, dict] | None:
    latest = _latest(directory)
    if latest is None:
        return None
    with tf.io.gfile.GFile(_state_path(directory, latest[0])) as f:
        return latest[0], json.load(f)


def _label(name: str, data_label: str) -> str:
    return f"{data_label} content" if name == DATA_FINGERPRINT else flag(name)


def _shown(name: str, value) -> str:
    return repr(short_fingerprint(value) if name == DATA_FINGERPRINT and value else value)


def _differences(stored: dict, wanted: dict, data_label: str = "the data's") -> list[str]:
    return [f"{_label(k, data_label)} {_shown(k, stored.get(k))} there, {_shown(k, wanted.get(k))} now"
            for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]


def check_resumable(config: TrainConfig, workers: int, fingerprint: str | None = None) -> None:
    """Raise ResumeConflict if the work dir's checkpoints cannot be continued: before any work without the
    data's `fingerprint` (its content is then not compared), and again once the data is read, with it."""
    first_epoch = {FEATURE_EXTRACTION: 0, FINE_TUNING: config.epochs}
    wanted_epochs = {phase: getattr(config, name) for phase, name in PHASE_EPOCHS.items()}
    fresh = "add --restart to discard it, or use a new --work-dir"
    for phase in PHASES:
        directory = phase_dir(config.work_dir, phase)
        found = _read_state(directory)
        if found is None:
            continue
        epoch, state = found
        wanted = phase_settings(config, phase, workers, fingerprint)
        stored = state["settings"]
        if fingerprint is None:
            stored, wanted = _without_fingerprint(stored), _without_fingerprint(wanted)
        differences = _differences(stored, wanted, data_flag(config))
        if differences:
            raise ResumeConflict(f"{config.work_dir} holds a {phase} run with other settings "
                                 f"({'; '.join(differences)}): {fresh}")
        done = epoch - first_epoch[phase]
        if done > wanted_epochs[phase]:
            epochs_flag = flag(PHASE_EPOCHS[phase])
            raise ResumeConflict(f"{config.work_dir} holds a {phase} run that has already trained {done} epochs, "
                                 f"more than {epochs_flag} {wanted_epochs[phase]}: ask for at least {done}, or {fresh}")


def _without_fingerprint(phase_settings_: dict) -> dict:
    return {k: v for k, v in phase_settings_.items() if k != DATA_FINGERPRINT}


def discard(work_dir: str) -> None:
    """--restart: forget every phase's checkpoints."""
    directory = posixpath.join(work_dir, "checkpoints")
    if tf.io.gfile.exists(directory):
        storage.remove_tree(directory)


class PhaseCheckpoint:
    """The model + optimizer checkpoint of one phase, with its history and settings."""

    def __init__(self, directory: str, full_model: keras.Model, optimizer, settings: dict, extra: dict | None = None):
        """`extra`: more trackable state saved with every epoch (early stopping's best weights, dropout's RNG)."""
        self.directory = directory
        self.optimizer = optimizer
        self.settings = settings
        self._checkpoint = tf.train.Checkpoint(model=full_model, optimizer=optimizer, **(extra or {}))
        self._manager = tf.train.CheckpointManager(self._checkpoint, directory, max_to_keep=1)

    def restore(self, trainable_variables) -> Resumed:
        """Load the newest checkpoint into the model and optimizer; Resumed() if there is none."""
        found = _read_state(self.directory)
        if found is None:
            return Resumed()
        epoch, state = found
        differences = _differences(state["settings"], self.settings)
        if differences:  # check_resumable catches this first; a guard for direct callers
            raise ResumeConflict(f"{self.directory} holds a run with other settings ({'; '.join(differences)})")
        self.optimizer.build(trainable_variables)  # so that the slots exist to be restored into
        self._checkpoint.restore(self._manager.latest_checkpoint).assert_existing_objects_matched()
        return Resumed(epoch=epoch, history=state["history"], seconds=state["seconds"])

    def save(self, epoch: int, history: dict, seconds: dict) -> None:
        """`seconds`: cache, train and evaluate time of the phase so far, over every process."""
        tf.io.gfile.makedirs(self.directory)
        storage.replace_json(_state_path(self.directory, epoch),
                             {"epoch": epoch, "history": history, "seconds": seconds, "settings": self.settings})
        self._manager.save(checkpoint_number=epoch)  # the index update is the commit point
        for name in tf.io.gfile.listdir(self.directory):
            match = re.fullmatch(r"state-(\d+)\.json", name)
            if match and int(match.group(1)) != epoch:
                tf.io.gfile.remove(posixpath.join(self.directory, name))


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the phase's checkpoint at the end of every epoch, with the history and `seconds()` so far."""

    def __init__(self, checkpoint: PhaseCheckpoint, history: dict, seconds: Callable[[], dict]):
        super().__init__()
        self.checkpoint = checkpoint
        self.history = history
        self.seconds = seconds

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.checkpoint.save(epoch + 1, self.history, self.seconds())

"""Resumable phases: a tf.train checkpoint after every epoch, and the rules for resuming.

Keras' BackupAndRestore saves only the model's weights, so a resumed RMSprop would start
from empty slot variables. Each phase keeps, in `<work>/checkpoints/<phase>/`, a
`tf.train.CheckpointManager` checkpoint `ckpt-<epoch>` of the full model and the optimizer
(slots, iteration count, loss scale) after every epoch, and beside it `state-<epoch>.json`
with the epoch history and the settings the phase ran with. TensorFlow writes a checkpoint
completely before it updates the `checkpoint` index file, so a killed process leaves the
previous checkpoint or the new one, never half of one.

Resuming: the number of epochs of a phase may grow ("train 10 more") and the phase continues
where it stopped. Any other change of a setting that alters the mathematics is a
`ResumeConflict`: one line naming the settings, and how to start fresh.
"""
from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from dataclasses import dataclass, field

import keras
import tensorflow as tf

from training import storage
from training.config import TrainConfig, local_data_dir

# The phases' names: their checkpoint folders, metrics.json keys and progress-line prefixes.
PHASES = FEATURE_EXTRACTION, FINE_TUNING = ("feature_extraction", "fine_tuning")
PHASE_EPOCHS = {FEATURE_EXTRACTION: "epochs", FINE_TUNING: "fine_tune_epochs"}  # each phase's epoch count
# Every setting that changes a phase's mathematics, except the epoch counts.
RUN_SETTINGS = ("dataset", "data_dir", "train_split", "validation_split", "test_split", "max_images", "seed",
                "img_size", "batch_size", "shuffle_buffer", "augment", "weights", "learning_rate", "fine_tune_at",
                "cache", "mixed_precision", "views", "dropout", "label_smoothing", "weight_decay", "lr_schedule",
                "early_stopping_patience")
# Settings added after work dirs existed: a stored run without one ran with its default.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


class ResumeConflict(RuntimeError):
    """The work dir holds a run that this configuration cannot continue."""


@dataclass
class Resumed:
    epoch: int = 0  # completed epochs, counted from the job's first epoch (fit's initial_epoch)
    history: dict[str, list[float]] = field(default_factory=dict)


def phase_dir(work_dir: str, phase: str) -> str:
    return posixpath.join(work_dir, "checkpoints", phase)


def phase_settings(config: TrainConfig, phase: str, workers: int) -> dict:
    """What must match for `phase` to resume. Phase 2 also starts from phase 1's last epoch."""
    settings = {name: getattr(config, name) for name in RUN_SETTINGS}
    settings["workers"] = workers
    if phase == FINE_TUNING:
        settings["epochs"] = config.epochs
    if config.lr_schedule != "constant":  # the schedule spans the phase's epochs: more of them change every rate
        name = PHASE_EPOCHS[phase]
        settings[name] = getattr(config, name)
    return settings


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


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _differences(stored: dict, wanted: dict) -> list[str]:
    def there(k):
        value = stored.get(k, _DEFAULTS.get(k))
        # Work dirs from before data_dir was normalised hold it as typed (e.g. relative to the same cwd).
        return local_data_dir(value) if k == "data_dir" and value else value
    # A run stored before the epoch counts were recorded with a schedule cannot be checked for them.
    unrecorded = {k for k in PHASE_EPOCHS.values() if k not in stored}
    return [f"{_flag(k)} {there(k)!r} there, {wanted.get(k)!r} now"
            for k in sorted((set(stored) | set(wanted)) - unrecorded) if there(k) != wanted.get(k)]


def check_resumable(config: TrainConfig, workers: int) -> None:
    """Raise ResumeConflict before any work if the work dir's checkpoints cannot be continued."""
    first_epoch = {FEATURE_EXTRACTION: 0, FINE_TUNING: config.epochs}
    wanted_epochs = {phase: getattr(config, name) for phase, name in PHASE_EPOCHS.items()}
    fresh = "add --restart to discard it, or use a new --work-dir"
    for phase in PHASES:
        directory = phase_dir(config.work_dir, phase)
        found = _read_state(directory)
        if found is None:
            continue
        epoch, state = found
        differences = _differences(state["settings"], phase_settings(config, phase, workers))
        if differences:
            raise ResumeConflict(f"{config.work_dir} holds a {phase} run with other settings "
                                 f"({'; '.join(differences)}): {fresh}")
        done = epoch - first_epoch[phase]
        if done > wanted_epochs[phase]:
            flag = _flag(PHASE_EPOCHS[phase])
            raise ResumeConflict(f"{config.work_dir} holds a {phase} run that has already trained {done} epochs, "
                                 f"more than {flag} {wanted_epochs[phase]}: ask for at least {done}, or {fresh}")


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
        return Resumed(epoch=epoch, history=state["history"])

    def save(self, epoch: int, history: dict) -> None:
        tf.io.gfile.makedirs(self.directory)
        storage.replace_json(_state_path(self.directory, epoch),
                             {"epoch": epoch, "history": history, "settings": self.settings})
        self._manager.save(checkpoint_number=epoch)  # the index update is the commit point
        for name in tf.io.gfile.listdir(self.directory):
            match = re.fullmatch(r"state-(\d+)\.json", name)
            if match and int(match.group(1)) != epoch:
                tf.io.gfile.remove(posixpath.join(self.directory, name))


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the phase's checkpoint at the end of every epoch, with the history so far."""

    def __init__(self, checkpoint: PhaseCheckpoint, history: dict):
        super().__init__()
        self.checkpoint = checkpoint
        self.history = history

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.checkpoint.save(epoch + 1, self.history)

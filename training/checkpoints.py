"""Resumable training: an atomic checkpoint after every epoch of a phase.

Keras' BackupAndRestore saves only the model's weights, so a resumed RMSprop would start
from empty slot variables and the run would differ from an uninterrupted one. This saves,
per completed epoch, the full model's weights, the optimizer's variables and the epoch
history, into `<dir>/epoch-NNNN` written as `.tmp-*` first and renamed into place: a killed
process leaves either the previous checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import keras
import numpy as np

_PREFIX = "epoch-"


@dataclass
class Resumed:
    epoch: int = 0  # completed epochs, i.e. fit's initial_epoch
    history: dict[str, list[float]] = field(default_factory=dict)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checkpoints(directory: str) -> list[tuple[int, str]]:
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        if name.startswith(_PREFIX) and name[len(_PREFIX):].isdigit():
            found.append((int(name[len(_PREFIX):]), os.path.join(directory, name)))
    return sorted(found)


def save(directory: str, epoch: int, full_model: keras.Model, optimizer, history: dict, fingerprint: str) -> None:
    os.makedirs(directory, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=directory)
    np.savez(os.path.join(tmp, "weights.npz"), *[np.asarray(w) for w in full_model.get_weights()])
    np.savez(os.path.join(tmp, "optimizer.npz"), *[np.asarray(v) for v in optimizer.variables])
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump({"epoch": epoch, "history": history, "fingerprint": fingerprint}, f)
    for name in os.listdir(tmp):
        with open(os.path.join(tmp, name), "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(tmp)
    final = os.path.join(directory, f"{_PREFIX}{epoch:04d}")
    if os.path.exists(final):
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(directory)
    for older, path in _checkpoints(directory):
        if older < epoch:
            shutil.rmtree(path, ignore_errors=True)


def restore(directory: str, full_model: keras.Model, optimizer, trainable_variables, fingerprint: str) -> Resumed:
    """Load the newest complete checkpoint into the model and optimizer; Resumed() if none."""
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        if name.startswith(".tmp-"):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)  # a killed save
    found = _checkpoints(directory)
    if not found:
        return Resumed()
    epoch, path = found[-1]
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    if state.get("fingerprint") != fingerprint:
        raise RuntimeError(f"{directory} holds a checkpoint of a run with different settings; "
                           "use a new --work-dir or delete that one")
    with np.load(os.path.join(path, "weights.npz")) as weights:
        full_model.set_weights([weights[f"arr_{i}"] for i in range(len(weights.files))])
    optimizer.build(trainable_variables)
    with np.load(os.path.join(path, "optimizer.npz")) as saved:
        if len(saved.files) != len(optimizer.variables):
            raise RuntimeError(f"optimizer checkpoint in {path} does not match this model")
        for i, variable in enumerate(optimizer.variables):
            variable.assign(saved[f"arr_{i}"])
    return Resumed(epoch=state["epoch"], history=state["history"])


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves a checkpoint at the end of every epoch, with the history so far."""

    def __init__(self, directory: str, full_model: keras.Model, history: dict, fingerprint: str, enabled=True):
        super().__init__()
        self.directory = directory
        self.full_model = full_model
        self.history = history
        self.fingerprint = fingerprint
        self.enabled = enabled

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        if self.enabled:
            save(self.directory, epoch + 1, self.full_model, self.model.optimizer, self.history, self.fingerprint)

"""What runs beside a phase's epochs: progress lines and per-activity seconds, and the options beyond
the tutorial (learning-rate schedule, early stopping, dropout's random state), each off by default."""
from __future__ import annotations

import contextlib
import math
import sys
import time

import keras
import tensorflow as tf

from training.config import LR_SCHEDULES

STEP_MILESTONES = (0.5, 0.75)  # step: x0.1 after half the phase's epochs, x0.01 after three quarters


# --- progress: log lines (containers log lines, not progress bars) and timings --------------------------

class EpochLine(keras.callbacks.Callback):
    def __init__(self, phase: str, total_epochs: int, stream=None):
        super().__init__()
        self.phase = phase
        self.total_epochs = total_epochs
        self.stream = stream or sys.stdout
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items())
        print(f"[{self.phase}] epoch {epoch + 1}/{self.total_epochs}  {metrics}  "
              f"({time.perf_counter() - self._started:.1f}s)", file=self.stream, flush=True)


class Stopwatch:
    """Seconds per activity (cache, train, evaluate), summed; `start` carries the sums of earlier
    processes (a resumed phase)."""

    def __init__(self, start: dict[str, float] | None = None):
        self.seconds: dict[str, float] = dict(start or {})

    @contextlib.contextmanager
    def timing(self, activity: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[activity] = self.seconds.get(activity, 0.0) + time.perf_counter() - started

    def __getitem__(self, activity: str) -> float:
        return self.seconds.get(activity, 0.0)


# --- learning-rate schedule (--lr-schedule): a function of the epoch alone, so a resumed phase continues it ---

def learning_rate_factor(schedule: str, epoch_in_phase: int, phase_epochs: int) -> float:
    """The multiplier of the phase's learning rate in its epoch `epoch_in_phase` (0-based)."""
    if schedule == "constant" or phase_epochs <= 0:
        return 1.0
    progress = epoch_in_phase / phase_epochs
    if schedule == "cosine":  # from 1 at the first epoch down towards 0 (never reached: the last epoch is E-1)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        return 0.1 ** sum(progress >= milestone for milestone in STEP_MILESTONES)
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; one of {', '.join(LR_SCHEDULES)}")


def schedule_callback(schedule: str, learning_rate: float, first_epoch: int, phase_epochs: int):
    """Keras' LearningRateScheduler for one phase (epochs are counted over the job), or None."""
    if schedule == "constant":
        return None
    return keras.callbacks.LearningRateScheduler(
        lambda epoch, _current: learning_rate * learning_rate_factor(schedule, epoch - first_epoch, phase_epochs))


# --- early stopping (--early-stopping-patience): its state is the checkpointed history, its best
# weights are variables in the phase checkpoint, so a resumed phase stops where an uninterrupted one would ---

def best_epoch(val_losses: list[float]) -> int:
    """Index of the lowest validation loss (the first one on ties), as Keras' EarlyStopping picks it."""
    return min(range(len(val_losses)), key=lambda i: (val_losses[i], i))


def has_stopped(val_losses: list[float], patience: int) -> bool:
    """`patience` epochs in a row without a new lowest validation loss."""
    return patience > 0 and bool(val_losses) and len(val_losses) - 1 - best_epoch(val_losses) >= patience


class EarlyStopping(keras.callbacks.Callback):
    """Stops the phase after `patience` epochs without a lower val_loss; `restore_best()` loads the best weights.

    `history` is the phase's history dict that the checkpoint callback appends to (this
    callback must run before it, so the best weights it copies are saved with the epoch).
    Every epoch's logs must hold val_loss: the phase creates it only when there are validation
    images (phases._early_stopping says early stopping is off otherwise).
    """

    def __init__(self, patience: int, variables, history: dict):
        super().__init__()
        self.patience = patience
        self.variables = list(variables)
        self.history = history
        # Copies of the trainable variables at the best epoch so far; saved in the phase checkpoint.
        self.best_weights = [tf.Variable(_value(v), trainable=False, name=f"best_{i}")
                             for i, v in enumerate(self.variables)]

    def stopped(self) -> bool:
        return has_stopped(self.history.get("val_loss", []), self.patience)

    def on_epoch_end(self, epoch, logs=None):
        losses = [*self.history.get("val_loss", []), float(logs["val_loss"])]
        if best_epoch(losses) == len(losses) - 1:
            for best, variable in zip(self.best_weights, self.variables):
                best.assign(_value(variable))
        if has_stopped(losses, self.patience):
            self.model.stop_training = True

    def restore_best(self) -> int | None:
        """Load the best epoch's weights into the model; the phase's epoch index that had them."""
        losses = self.history.get("val_loss", [])
        if not losses:
            return None
        for best, variable in zip(self.best_weights, self.variables):
            variable.assign(best)
        return best_epoch(losses)


def _value(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


# --- dropout before the head (--dropout): Keras' own Dropout (training/model.py) ---------------------------

def random_state(model: keras.Model) -> list:
    """The random-number state of the model's Dropout layers, for the phase checkpoint (resumed epochs
    draw the same masks)."""
    return [layer.seed_generator.state for layer in _all_layers(model) if isinstance(layer, keras.layers.Dropout)]


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)

"""Training loops: run epochs `initial_epoch..epochs-1`, each on its own freshly shuffled batches.

One epoch at a time because each epoch's batches come from `train_batches(epoch)` (see
training/inputs.py: the order depends on (seed, epoch) only, so a resumed job trains on the
same batches as an uninterrupted one). Both loops call the same Keras callbacks with the same
logs as `Model.fit` would: checkpoints, progress lines and TensorBoard behave the same. Each
loop adds its training and its evaluating (the epochs' validation included) to a Stopwatch
apart, so throughput is measured on training alone.
"""
from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from training.multiworker_loop import MultiWorkerLoop, is_multi_worker
from training.progress import Stopwatch


class KerasLoop:
    """Keras' own fit and evaluate, one epoch per call (the validation after fit, as fit itself runs it)."""

    def __init__(self, model: keras.Model, clock: Stopwatch | None = None):
        self.model = model
        self.clock = clock or Stopwatch()

    def train_epoch(self, train_batches: tf.data.Dataset, validation_batches=None) -> dict:
        with self.clock.timing("train"):
            history = self.model.fit(train_batches, epochs=1, verbose=0,
                                     shuffle=False)  # the batches are already shuffled (seeded)
        logs = {key: float(values[-1]) for key, values in history.history.items()}
        if validation_batches is not None:
            loss, accuracy = self.evaluate(validation_batches)
            logs.update(val_loss=loss, val_accuracy=accuracy)
        return logs

    def evaluate(self, batches: tf.data.Dataset) -> tuple[float, float]:
        with self.clock.timing("evaluate"):
            values = self.model.evaluate(batches, verbose=0, return_dict=True)
        return float(values["loss"]), float(values["accuracy"])


def make_loop(model: keras.Model, num_classes: int, global_batch_size: int, label_smoothing: float = 0.0,
              clock: Stopwatch | None = None):
    strategy = tf.distribute.get_strategy()
    if is_multi_worker(strategy):
        return MultiWorkerLoop(model, num_classes, global_batch_size, strategy, label_smoothing, clock)
    return KerasLoop(model, clock)


def fit_epochs(loop, train_batches: Callable[[int], tf.data.Dataset], validation_batches, initial_epoch: int,
               epochs: int, callbacks=()) -> None:
    """Train epochs initial_epoch..epochs-1 (0-based, counted over the whole job), or until a
    callback sets `model.stop_training` (as in Model.fit: early stopping)."""
    callback_list = keras.callbacks.CallbackList(list(callbacks), model=loop.model)
    loop.model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        logs = loop.train_epoch(train_batches(epoch), validation_batches)
        callback_list.on_epoch_end(epoch, logs)
        if loop.model.stop_training:
            break
    callback_list.on_train_end()

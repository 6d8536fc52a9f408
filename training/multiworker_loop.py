"""The epoch loop for MultiWorkerMirroredStrategy, on tf.distribute's own primitives.

Keras 3's Model.fit does not run under MultiWorkerMirroredStrategy: it all-reduces a sample
batch to learn shapes and reduces scalar metrics along axis 0, both of which fail across
workers (keras-team/keras#20585, tensorflow/tensorflow#72388; seen here with Keras 3.15).
This loop is TensorFlow's custom-training-loop recipe (tutorials/distribute/custom_training):
each worker feeds its own shard (`distribute_datasets_from_function`), `strategy.run` per
replica, the loss averaged over the global batch, the Keras optimizer all-reducing gradients,
and `strategy.reduce` for the epoch's sums. The loss, the accuracy's decision rule and the
loss scaling are Keras' own (model_api/decision.py; `optimizer.scale_loss` before the
gradients and the LossScaleOptimizer's unscaling in `apply_gradients`, as Keras' train_step
does), so --mixed-precision trains as it does in one process. The model is called with
`training=True` in a training step, as Keras' train_step calls it: the dropout drops, and the
base, an InferenceModeModel (training/model.py), keeps its BatchNormalization statistics.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from model_api import decision
from training.progress import Stopwatch


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


class MultiWorkerLoop:
    def __init__(self, model: keras.Model, num_classes: int, global_batch_size: int,
                 strategy: tf.distribute.Strategy, label_smoothing: float = 0.0, clock: Stopwatch | None = None):
        self.model = model
        self.clock = clock or Stopwatch()
        self.strategy = strategy
        self.global_batch_size = global_batch_size
        self.per_example_loss = decision.per_example_loss(num_classes, reduction=None,
                                                         label_smoothing=label_smoothing)
        self._train_step = tf.function(self._distributed(self._replica_train_step))
        self._test_step = tf.function(self._distributed(self._replica_test_step))

    def _sums(self, y, logits):
        """Per-example losses and the number of correct decisions of one replica's batch."""
        per_example = self.per_example_loss(tf.reshape(y, [-1, 1]) if logits.shape[-1] == 1 else y, logits)
        correct = tf.equal(decision.classes_from_logits(logits), tf.cast(tf.reshape(y, [-1]), tf.int64))
        return per_example, tf.reduce_sum(tf.cast(correct, tf.float32))

    def _replica_train_step(self, x, y):
        optimizer = self.model.optimizer
        with tf.GradientTape() as tape:
            # training=True as in Keras' train_step: the dropout drops, the base stays in inference mode
            logits = tf.cast(self.model(x, training=True), tf.float32)
            per_example, correct = self._sums(y, logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
            scaled_loss = optimizer.scale_loss(loss)  # x loss scale under mixed precision, else x 1
        gradients = tape.gradient(scaled_loss, self.model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))  # unscales them
        return tf.reduce_sum(per_example), correct, tf.cast(tf.size(per_example), tf.float32)

    def _replica_test_step(self, x, y):
        logits = tf.cast(self.model(x, training=False), tf.float32)
        per_example, correct = self._sums(y, logits)
        return tf.reduce_sum(per_example), correct, tf.cast(tf.size(per_example), tf.float32)

    def _distributed(self, replica_step):
        def step(batch):
            x, y = batch
            sums = self.strategy.run(replica_step, args=(x, y))
            return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in sums]
        return step

    def _run_epoch(self, step, dataset: tf.data.Dataset) -> dict:
        """`dataset` is this worker's shard, batched at the per-worker batch size."""
        loss = correct = count = 0.0
        for batch in self.strategy.distribute_datasets_from_function(lambda _context: dataset):
            batch_loss, batch_correct, batch_count = step(batch)
            loss, correct, count = loss + float(batch_loss), correct + float(batch_correct), count + float(batch_count)
        return {"loss": loss / max(count, 1.0), "accuracy": correct / max(count, 1.0)}

    def train_epoch(self, train_batches: tf.data.Dataset, validation_batches=None) -> dict:
        with self.clock.timing("train"):
            logs = self._run_epoch(self._train_step, train_batches)
        if validation_batches is not None:
            loss, accuracy = self.evaluate(validation_batches)
            logs.update(val_loss=loss, val_accuracy=accuracy)
        return logs

    def evaluate(self, dataset: tf.data.Dataset) -> tuple[float, float]:
        with self.clock.timing("evaluate"):
            result = self._run_epoch(self._test_step, dataset)
        return result["loss"], result["accuracy"]

"""The fit/evaluate loop for MultiWorkerMirroredStrategy, on tf.distribute's own primitives.

Keras 3's Model.fit does not run under MultiWorkerMirroredStrategy: it all-reduces a sample
batch to learn shapes and reduces scalar metrics along axis 0, both of which fail across
workers (keras-team/keras#20585, tensorflow/tensorflow#72388; seen here with Keras 3.15).
This loop is TensorFlow's custom-training-loop recipe (tutorials/distribute/custom_training):
`strategy.run` per replica, the loss averaged over the global batch, the Keras optimizer
all-reducing gradients, and `strategy.reduce` for the epoch's sums. Like InferenceModeModel's
train_step, the model runs with training=False. It calls the same Keras callbacks with the
same logs as fit, so checkpoints, progress lines and TensorBoard behave the same.
"""
from __future__ import annotations

import keras
import tensorflow as tf


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


class MultiWorkerLoop:
    def __init__(self, model: keras.Model, num_classes: int, global_batch_size: int,
                 strategy: tf.distribute.Strategy):
        self.model = model
        self.strategy = strategy
        self.global_batch_size = global_batch_size
        if num_classes == 2:
            self.per_example_loss = keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)
            self.correct = lambda y, logits: tf.cast(tf.equal(tf.cast(logits[:, 0] > 0, tf.int64),
                                                              tf.cast(y, tf.int64)), tf.float32)
        else:
            self.per_example_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
            self.correct = lambda y, logits: tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int64),
                                                              tf.cast(y, tf.int64)), tf.float32)
        self._train_step = tf.function(self._distributed(self._replica_train_step))
        self._test_step = tf.function(self._distributed(self._replica_test_step))

    def _sums(self, y, logits):
        y = tf.reshape(y, [-1, 1]) if logits.shape[-1] == 1 else y
        per_example = self.per_example_loss(y, logits)
        return per_example, tf.reduce_sum(self.correct(tf.reshape(y, [-1]), logits))

    def _replica_train_step(self, x, y):
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model(x, training=False), tf.float32)
            per_example, correct = self._sums(y, logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
        gradients = tape.gradient(loss, self.model.trainable_variables)
        self.model.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
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

    def _run_epoch(self, step, dataset) -> dict:
        loss = correct = count = 0.0
        for batch in self.strategy.experimental_distribute_dataset(dataset):
            batch_loss, batch_correct, batch_count = step(batch)
            loss, correct, count = loss + float(batch_loss), correct + float(batch_correct), count + float(batch_count)
        return {"loss": loss / max(count, 1.0), "accuracy": correct / max(count, 1.0)}

    def fit(self, train_ds, epochs: int, initial_epoch: int, validation_data=None, callbacks=()) -> None:
        callback_list = keras.callbacks.CallbackList(list(callbacks), model=self.model)
        callback_list.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            callback_list.on_epoch_begin(epoch)
            logs = self._run_epoch(self._train_step, train_ds)
            if validation_data is not None:
                logs.update({f"val_{k}": v for k, v in self._run_epoch(self._test_step, validation_data).items()})
            callback_list.on_epoch_end(epoch, logs)
        callback_list.on_train_end()

    def evaluate(self, dataset) -> tuple[float, float]:
        result = self._run_epoch(self._test_step, dataset)
        return result["loss"], result["accuracy"]

"""How epochs run: the tf.distribute strategy, chief and data shard of this process (from TF_CONFIG), and
the epoch loops, Keras' fit or tf.distribute's custom loop across workers, with fit's callbacks and logs."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Callable

import keras
import tensorflow as tf

from model_api import decision
from training.callbacks import Stopwatch
from training.config import ConfigError
from training.pipeline import Shard


# --- the runtime: which strategy, whether this process is the chief, which shard it reads ---------------

@dataclass
class Runtime:
    strategy: tf.distribute.Strategy
    is_chief: bool
    worker_id: str  # "chief", "worker-1", ...
    shard: Shard = field(default_factory=Shard)  # one input pipeline per worker

    def work_dir_for(self, work_dir: str) -> str:
        """Only the chief writes outputs; the others write into a scratch folder (TF's multi-worker tutorial)."""
        return work_dir if self.is_chief else posixpath.join(work_dir, "workers", self.worker_id)


def _input_pipeline(cluster: dict, task_type: str, task_id: int) -> Shard:
    """The chief is pipeline 0, then the workers in order: tf.distribute's own numbering
    (tensorflow/python/distribute/multi_worker_util.py, id_in_cluster and worker_count)."""
    chiefs = len(cluster.get("chief", []))
    count = chiefs + len(cluster.get("worker", []))
    index = 0 if task_type == "chief" else task_id + chiefs
    return Shard(index=index, count=count)


def make_runtime(global_batch_size: int = 1) -> Runtime:
    """A TF_CONFIG cluster of several tasks: MultiWorkerMirroredStrategy; several local GPUs:
    MirroredStrategy; else the default strategy."""
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    cluster = resolver.cluster_spec().as_dict()
    tasks = sum(len(v) if isinstance(v, list) else len(v.keys()) for v in cluster.values())
    if tasks > 1:
        task_type, task_id = resolver.task_type, resolver.task_id
        shard = _input_pipeline(cluster, task_type, task_id)
        if global_batch_size % shard.count:
            raise ConfigError(f"--batch-size {global_batch_size} must be a multiple of the "
                              f"{shard.count} workers (each reads batch-size / workers examples per step)")
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
        return Runtime(strategy, chief, "chief" if chief else f"{task_type}-{task_id}", shard)
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return Runtime(tf.distribute.MirroredStrategy(), True, "chief")
    return Runtime(tf.distribute.get_strategy(), True, "chief")


# --- the loops: one epoch per call, training and evaluating timed apart ----------------------------------

class _EpochLoop:
    """One epoch per call: train (timed as "train"), then validate (timed as "evaluate"), as fit runs it.
    A loop defines `_train(batches) -> logs` and `_evaluate(batches) -> (loss, accuracy)`."""

    def train_epoch(self, train_batches: tf.data.Dataset, validation_batches=None) -> dict:
        with self.clock.timing("train"):
            logs = self._train(train_batches)
        if validation_batches is not None:
            loss, accuracy = self.evaluate(validation_batches)
            logs.update(val_loss=loss, val_accuracy=accuracy)
        return logs

    def evaluate(self, batches: tf.data.Dataset) -> tuple[float, float]:
        with self.clock.timing("evaluate"):
            return self._evaluate(batches)


class KerasLoop(_EpochLoop):
    """Keras' own fit and evaluate."""

    def __init__(self, model: keras.Model, clock: Stopwatch | None = None):
        self.model = model
        self.clock = clock or Stopwatch()

    def _train(self, batches: tf.data.Dataset) -> dict:
        history = self.model.fit(batches, epochs=1, verbose=0, shuffle=False)  # batches come shuffled (seeded)
        return {key: float(values[-1]) for key, values in history.history.items()}

    def _evaluate(self, batches: tf.data.Dataset) -> tuple[float, float]:
        values = self.model.evaluate(batches, verbose=0, return_dict=True)
        return float(values["loss"]), float(values["accuracy"])


class MultiWorkerLoop(_EpochLoop):
    """TensorFlow's custom-training-loop recipe (tutorials/distribute/custom_training), because Keras 3's
    fit does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585, tensorflow/tensorflow#72388).

    Each worker feeds its own shard; the loss, decision rule and loss scaling are Keras' own
    (model_api/decision.py; `optimizer.scale_loss`, then `apply_gradients` unscales), so
    --mixed-precision trains as in one process (docs/training.md, "Scaling out").
    """

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
            # training=True as Keras' fit calls it: the dropout drops, the base stays in inference mode
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

    def _train(self, batches: tf.data.Dataset) -> dict:
        return self._run_epoch(self._train_step, batches)

    def _evaluate(self, batches: tf.data.Dataset) -> tuple[float, float]:
        result = self._run_epoch(self._test_step, batches)
        return result["loss"], result["accuracy"]


def make_loop(model: keras.Model, num_classes: int, global_batch_size: int, label_smoothing: float = 0.0,
              clock: Stopwatch | None = None):
    strategy = tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return MultiWorkerLoop(model, num_classes, global_batch_size, strategy, label_smoothing, clock)
    return KerasLoop(model, clock)


def fit_epochs(loop, train_batches: Callable[[int], tf.data.Dataset], validation_batches, initial_epoch: int,
               epochs: int, callbacks=()) -> None:
    """Train epochs initial_epoch..epochs-1 (0-based, over the whole job), each on `train_batches(epoch)`,
    or until a callback sets `model.stop_training` (as in Model.fit: early stopping)."""
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

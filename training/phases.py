"""The tutorial's two phases, each run end to end or on an exact cache.

Phase 1, feature extraction: the base is frozen and runs in inference mode, so each image's
pooled 1280-d feature never changes; it is computed once and the head trains on it.
Phase 2, fine-tuning: every layer below `fine_tune_at` is frozen and in inference mode too,
so the output of the deepest such layer that feeds everything above it (the "cut") is
computed once and only the top of the network runs each epoch.
Same mathematics as the tutorial's pipeline, same batches in the same order (the shuffle is
seeded and depends only on the element count); tests/training/test_phases.py proves it.
With --augment the inputs are random every epoch, so both phases train end to end.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf

from training import checkpoints
from training.config import TrainConfig
from training.data import Datasets, Split
from training.model import Classifier, InferenceModeModel, compile_for, cut_layer_index, split_at
from training.model import freeze_for_feature_extraction, trainable_parameter_count, unfreeze_from
from training.multiworker_loop import MultiWorkerLoop, is_multi_worker
from training.preprocess import format_example
from training.progress import EpochLine, say

AUTOTUNE = tf.data.AUTOTUNE


@dataclass
class PhaseResult:
    name: str
    first_epoch: int          # absolute index of the phase's first epoch (0-based)
    epochs: int
    history: dict[str, list[float]]
    seconds: float
    train_images: int
    images_per_second: float
    test_loss: float
    test_accuracy: float
    cached: bool
    trainable_parameters: int
    resumed_at_epoch: int | None = None


@dataclass
class _Plan:
    """What fit() trains (`model`) and on what: raw images when `trunk` is None, otherwise
    the frozen `trunk`'s output per image (computed once), passed through the frozen
    `rest` when it is set."""

    model: keras.Model
    trunk: keras.Model | None = None
    rest: keras.Model | None = None


class FrozenOutputs:
    """Outputs of frozen trunks, per split, computed once and shared by both phases.

    Phase 1's pooled features are pool(top(trunk(x))) with every layer frozen, so when
    phase 2 will cache the trunk anyway, phase 1 computes the trunk once and derives its
    features from it: one pass over the images for the whole job.
    """

    def __init__(self):
        self._arrays: dict = {}
        self._splits: dict = {}

    def split(self, base: keras.Model, cut: int) -> tuple[keras.Model, keras.Model]:
        key = (id(base), cut)
        if key not in self._splits:
            self._splits[key] = split_at(base, cut)
        return self._splits[key]

    def trunk_outputs(self, trunk: keras.Model, split_name: str, split: Split, config: TrainConfig):
        key = (id(trunk), split_name)
        if key not in self._arrays:
            self._arrays[key] = compute_once(trunk, split, config)
        return self._arrays[key]


# --- input pipelines --------------------------------------------------------------------

def image_batches(split: Split, config: TrainConfig, shuffle: bool, augment: bool = False) -> tf.data.Dataset:
    """The tutorial's pipeline: map(format_example).shuffle(1000).batch(32), plus prefetch."""
    ds = split.images.map(lambda image, label: (format_example(image, config.img_size), label),
                          num_parallel_calls=AUTOTUNE)
    if shuffle:
        ds = ds.shuffle(config.shuffle_buffer, seed=config.seed)
    ds = ds.batch(config.batch_size)
    if augment:
        augmenter = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=config.seed),
                                      keras.layers.RandomRotation(0.2, seed=config.seed)])
        ds = ds.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def cached_batches(inputs: np.ndarray, labels: np.ndarray, config: TrainConfig, shuffle: bool) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((inputs, labels))
    if shuffle:
        ds = ds.shuffle(config.shuffle_buffer, seed=config.seed)
    return ds.batch(config.batch_size).prefetch(AUTOTUNE)


def compute_once(stem: keras.Model, split: Split, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The frozen stem's output for every image of a split, in the split's order.

    One pass in inference mode; every worker of a multi-worker run computes the whole
    cache itself, so all replicas train on identical inputs.
    """
    run_stem = tf.function(lambda x: stem(x, training=False), reduce_retracing=True)
    outputs, labels = [], []
    for images, batch_labels in image_batches(split, config, shuffle=False):
        outputs.append(run_stem(images).numpy())
        labels.append(batch_labels.numpy())
    if not outputs:
        return np.zeros((0, *stem.output.shape[1:]), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(outputs), np.concatenate(labels)


# --- the phases -----------------------------------------------------------------------------

def _feature_extraction_plan(classifier: Classifier, config: TrainConfig, frozen: FrozenOutputs) -> _Plan:
    if not (config.cache and not config.augment):
        return _Plan(model=classifier.model)
    features = keras.Input(classifier.pool.output.shape[1:], name="pooled_features")
    head_model = InferenceModeModel(features, classifier.head(features), name="head")
    cut = cut_layer_index(classifier.base, config.fine_tune_at) if config.fine_tune_epochs else 0
    if 0 < cut < len(classifier.base.layers) - 1:  # phase 2 caches this trunk: share it
        trunk, top = frozen.split(classifier.base, cut)
        cut_input = keras.Input(top.input.shape[1:])
        rest = keras.Model(cut_input, classifier.pool(top(cut_input, training=False)), name="frozen_top")
        return _Plan(model=head_model, trunk=trunk, rest=rest)
    stem = keras.Model(classifier.base.input, classifier.pool(classifier.base.output), name="frozen_base")
    return _Plan(model=head_model, trunk=stem)


def _fine_tuning_plan(classifier: Classifier, config: TrainConfig, frozen: FrozenOutputs) -> _Plan:
    cut = cut_layer_index(classifier.base, config.fine_tune_at) if config.cache and not config.augment else 0
    if cut == 0:
        return _Plan(model=classifier.model)
    if cut >= len(classifier.base.layers) - 1:  # the whole base stays frozen: train the head only
        return _feature_extraction_plan(classifier, dataclasses.replace(config, fine_tune_epochs=0), frozen)
    trunk, top = frozen.split(classifier.base, cut)
    cut_input = keras.Input(top.input.shape[1:], name="cut_" + classifier.base.layers[cut].name)
    outputs = classifier.head(classifier.pool(top(cut_input, training=False)))
    return _Plan(model=InferenceModeModel(cut_input, outputs, name="top_and_head"), trunk=trunk)


def feature_extraction(config: TrainConfig, classifier: Classifier, data: Datasets, callbacks=(),
                       frozen: FrozenOutputs | None = None) -> PhaseResult:
    """Phase 1: base frozen, RMSprop(lr), `config.epochs` epochs."""
    freeze_for_feature_extraction(classifier)
    frozen = frozen or FrozenOutputs()
    plan = _feature_extraction_plan(classifier, config, frozen)
    return _run_phase("feature_extraction", config, classifier, data, plan, frozen, config.learning_rate,
                      first_epoch=0, epochs=config.epochs, callbacks=callbacks)


def fine_tuning(config: TrainConfig, classifier: Classifier, data: Datasets, callbacks=(),
                frozen: FrozenOutputs | None = None) -> PhaseResult:
    """Phase 2: base trainable from `fine_tune_at`, RMSprop(lr / 10), epochs numbered on."""
    unfreeze_from(classifier, config.fine_tune_at)
    frozen = frozen or FrozenOutputs()
    plan = _fine_tuning_plan(classifier, config, frozen)
    return _run_phase("fine_tuning", config, classifier, data, plan, frozen, config.fine_tune_learning_rate,
                      first_epoch=config.epochs, epochs=config.fine_tune_epochs, callbacks=callbacks)


def _run_phase(name, config, classifier, data, plan, frozen, learning_rate, first_epoch, epochs,
               callbacks) -> PhaseResult:
    phase_dir = os.path.join(config.work_dir, "checkpoints", name)
    done_file = os.path.join(phase_dir, "result.json")
    fingerprint = run_fingerprint(config)
    compile_for(plan.model, classifier.num_classes, learning_rate)
    if os.path.exists(done_file):  # finished before the process was restarted
        checkpoints.restore(phase_dir, classifier.model, plan.model.optimizer, plan.model.trainable_variables,
                            fingerprint)
        with open(done_file) as f:
            result = PhaseResult(**json.load(f))
        say(f"[{name}] already complete in {phase_dir}: test accuracy {result.test_accuracy:.4f}")
        return result
    resumed = checkpoints.restore(phase_dir, classifier.model, plan.model.optimizer,
                                  plan.model.trainable_variables, fingerprint)
    initial_epoch = max(first_epoch, resumed.epoch)
    if resumed.epoch:
        say(f"[{name}] resuming after epoch {resumed.epoch} from {phase_dir}")

    started = time.perf_counter()
    cached = plan.trunk is not None
    if cached:
        total = data.train.count + data.validation.count + data.test.count
        say(f"[{name}] frozen part computed once for {total} images: {plan.trunk.name} -> "
            f"{tuple(plan.trunk.output.shape[1:])}" + (f" -> {plan.rest.name}" if plan.rest else ""))
        train_ds, val_ds, test_ds = (
            cached_batches(*_frozen_inputs(plan, frozen, split_name, split, config), config,
                           shuffle=split_name == "train")
            for split_name, split in data.splits().items())
        say(f"[{name}] cached inputs ready after {time.perf_counter() - started:.1f}s")
    else:
        train_ds = image_batches(data.train, config, shuffle=True, augment=config.augment)
        val_ds = image_batches(data.validation, config, shuffle=False)
        test_ds = image_batches(data.test, config, shuffle=False)

    history = {k: list(v) for k, v in resumed.history.items()}
    fit_callbacks = [
        checkpoints.EpochCheckpoint(phase_dir, classifier.model, history, fingerprint),
        EpochLine(name, first_epoch + epochs),
        *callbacks,
    ]
    trainable = trainable_parameter_count(plan.model)
    say(f"[{name}] {trainable:,} trainable parameters; epochs {initial_epoch + 1}..{first_epoch + epochs}"
        f"{' on cached inputs' if cached else ' end to end'}")
    strategy = tf.distribute.get_strategy()
    loop = MultiWorkerLoop(plan.model, classifier.num_classes, config.batch_size, strategy) \
        if is_multi_worker(strategy) else None
    if initial_epoch < first_epoch + epochs:
        validation = val_ds if data.validation.count else None
        if loop:
            loop.fit(train_ds, epochs=first_epoch + epochs, initial_epoch=initial_epoch,
                     validation_data=validation, callbacks=fit_callbacks)
        else:
            plan.model.fit(train_ds, validation_data=validation, epochs=first_epoch + epochs,
                           initial_epoch=initial_epoch, callbacks=fit_callbacks, verbose=0,
                           shuffle=False)  # the dataset is already shuffled (seeded)
    if data.test.count == 0:
        test_loss, test_accuracy = float("nan"), float("nan")
    elif loop:
        test_loss, test_accuracy = loop.evaluate(test_ds)
    else:
        test_loss, test_accuracy = _evaluate(plan.model, test_ds)
    seconds = time.perf_counter() - started
    epochs_run = first_epoch + epochs - initial_epoch
    result = PhaseResult(
        name=name, first_epoch=first_epoch, epochs=epochs, history=history, seconds=seconds,
        train_images=data.train.count, images_per_second=data.train.count * epochs_run / seconds if seconds else 0.0,
        test_loss=test_loss, test_accuracy=test_accuracy, cached=cached, trainable_parameters=trainable,
        resumed_at_epoch=resumed.epoch or None)
    if epochs == 0:
        checkpoints.save(phase_dir, first_epoch, classifier.model, plan.model.optimizer, history, fingerprint)
    os.makedirs(phase_dir, exist_ok=True)
    with open(done_file + ".tmp", "w") as f:
        json.dump(asdict(result), f)
    os.replace(done_file + ".tmp", done_file)
    say(f"[{name}] test accuracy {test_accuracy:.4f}, loss {test_loss:.4f}; {seconds:.1f}s")
    return result


def _frozen_inputs(plan: _Plan, frozen: FrozenOutputs, split_name: str, split: Split, config: TrainConfig):
    outputs, labels = frozen.trunk_outputs(plan.trunk, split_name, split, config)
    if plan.rest is None:
        return outputs, labels
    run_rest = tf.function(lambda x: plan.rest(x, training=False), reduce_retracing=True)
    parts = [run_rest(outputs[i:i + config.batch_size]).numpy() for i in range(0, len(outputs), config.batch_size)]
    return (np.concatenate(parts) if parts else np.zeros((0, *plan.rest.output.shape[1:]), np.float32)), labels


def _evaluate(model: keras.Model, test_ds: tf.data.Dataset) -> tuple[float, float]:
    values = model.evaluate(test_ds, verbose=0, return_dict=True)
    return float(values["loss"]), float(values["accuracy"])


def run_fingerprint(config: TrainConfig) -> str:
    """What must match for a checkpoint to be resumed: everything that changes the mathematics."""
    relevant = {k: v for k, v in config.to_dict().items()
                if k in ("dataset", "data_dir", "train_split", "validation_split", "test_split", "max_images",
                         "seed", "img_size", "batch_size", "shuffle_buffer", "augment", "weights",
                         "learning_rate", "epochs", "fine_tune_at", "cache", "mixed_precision")}
    return json.dumps(relevant, sort_keys=True)

"""The tutorial's two phases, each resumable, each on images or on an exact cache.

Phase 1, feature extraction: freeze the base, train the head with RMSprop(lr) for `epochs`.
Phase 2, fine-tuning: unfreeze the base from `fine_tune_at`, train with RMSprop(lr / 10) for
`fine_tune_epochs` more, its epochs numbered on from phase 1's.
A phase: compile -> resume from its checkpoint -> train the epochs still missing, one
checkpoint per epoch -> evaluate on the test split -> store its result. What it trains on is
its plan (training/plans.py); resuming is training/checkpoints.py.
"""
from __future__ import annotations

import json
import posixpath
import time
from dataclasses import asdict, dataclass

import tensorflow as tf

from training import checkpoints, loops
from training.config import TrainConfig
from training.data import Datasets
from training.inputs import Shard
from training.model import Classifier, compile_for, freeze_for_feature_extraction, trainable_parameter_count
from training.model import unfreeze_from
from training.plans import FrozenParts, Plan
from training.progress import EpochLine, say

RESULT_FILE = "result.json"


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


@dataclass(frozen=True)
class Phase:
    name: str
    first_epoch: int
    epochs: int
    learning_rate: float

    @property
    def last_epoch(self) -> int:  # exclusive, counted over the whole job
        return self.first_epoch + self.epochs


def feature_extraction(config: TrainConfig, classifier: Classifier, data: Datasets, callbacks=(),
                       frozen: FrozenParts | None = None, shard: Shard = Shard()) -> PhaseResult:
    """Phase 1: base frozen, RMSprop(lr), epochs 1..`config.epochs`."""
    freeze_for_feature_extraction(classifier)
    frozen = frozen or FrozenParts(classifier, config, data, shard)
    phase = Phase("feature_extraction", 0, config.epochs, config.learning_rate)
    return run_phase(phase, config, classifier, data, frozen.feature_extraction_plan(), callbacks, shard)


def fine_tuning(config: TrainConfig, classifier: Classifier, data: Datasets, callbacks=(),
                frozen: FrozenParts | None = None, shard: Shard = Shard()) -> PhaseResult:
    """Phase 2: base trainable from `fine_tune_at`, RMSprop(lr / 10), epochs numbered on."""
    unfreeze_from(classifier, config.fine_tune_at)
    frozen = frozen or FrozenParts(classifier, config, data, shard)
    phase = Phase("fine_tuning", config.epochs, config.fine_tune_epochs, config.fine_tune_learning_rate)
    return run_phase(phase, config, classifier, data, frozen.fine_tuning_plan(), callbacks, shard)


def run_phase(phase: Phase, config: TrainConfig, classifier: Classifier, data: Datasets, plan: Plan, callbacks=(),
              shard: Shard = Shard()) -> PhaseResult:
    directory = checkpoints.phase_dir(config.work_dir, phase.name)
    compile_for(plan.model, classifier.num_classes, phase.learning_rate)
    checkpoint = checkpoints.PhaseCheckpoint(directory, classifier.model, plan.model.optimizer,
                                             checkpoints.phase_settings(config, phase.name, shard.count))
    resumed = checkpoint.restore(plan.model.trainable_variables)
    stored = _stored_result(directory)
    if stored is not None and stored.epochs == phase.epochs and resumed.epoch == phase.last_epoch:
        say(f"[{phase.name}] already complete in {directory}: test accuracy {stored.test_accuracy:.4f}")
        return stored
    initial_epoch = max(phase.first_epoch, resumed.epoch)
    _say_where_it_starts(phase, resumed, directory)

    started = time.perf_counter()
    loop = loops.make_loop(plan.model, classifier.num_classes, config.batch_size)
    history = {k: list(v) for k, v in resumed.history.items()}
    trainable = trainable_parameter_count(plan.model)
    _prepare_inputs(phase, plan, config, data, shard)
    say(f"[{phase.name}] {trainable:,} trainable parameters; epochs {initial_epoch + 1}..{phase.last_epoch} "
        f"{plan.description}")
    validation = plan.eval_batches(config, "validation", shard) if data.validation.count else None
    loops.fit_epochs(loop, lambda epoch: plan.train_batches(config, epoch, shard), validation,
                     initial_epoch, phase.last_epoch,
                     [checkpoints.EpochCheckpoint(checkpoint, history), EpochLine(phase.name, phase.last_epoch),
                      *callbacks])
    if resumed.epoch != phase.last_epoch and initial_epoch == phase.last_epoch:  # 0 epochs: mark the end
        checkpoint.save(phase.last_epoch, history)
    test_loss, test_accuracy = _test(loop, plan, config, data, shard)
    seconds = time.perf_counter() - started
    epochs_run = phase.last_epoch - initial_epoch
    result = PhaseResult(
        name=phase.name, first_epoch=phase.first_epoch, epochs=phase.epochs, history=history, seconds=seconds,
        train_images=data.train.count,
        images_per_second=data.train.count * epochs_run / seconds if seconds else 0.0,
        test_loss=test_loss, test_accuracy=test_accuracy, cached=plan.cached, trainable_parameters=trainable,
        resumed_at_epoch=resumed.epoch or None)
    _store_result(directory, result)
    say(f"[{phase.name}] test accuracy {test_accuracy:.4f}, loss {test_loss:.4f}; {seconds:.1f}s")
    return result


def _say_where_it_starts(phase: Phase, resumed: checkpoints.Resumed, directory: str) -> None:
    done = resumed.epoch - phase.first_epoch
    if resumed.epoch and done == phase.epochs:
        say(f"[{phase.name}] all {phase.epochs} epochs were trained in a previous run ({directory})")
    elif resumed.epoch:
        say(f"[{phase.name}] resuming after epoch {resumed.epoch} from {directory}: {done} of {phase.epochs} "
            f"epochs done, training {phase.epochs - done} more")


def _prepare_inputs(phase: Phase, plan: Plan, config: TrainConfig, data: Datasets, shard: Shard) -> None:
    """Build the caches (or find them on disk) before the first epoch, and say what it cost."""
    if not plan.cached:
        return
    started = time.perf_counter()
    for split_name in data.splits():
        plan.examples(split_name)
    say(f"[{phase.name}] cached inputs ready after {time.perf_counter() - started:.1f}s")


def _test(loop, plan: Plan, config: TrainConfig, data: Datasets, shard: Shard) -> tuple[float, float]:
    if data.test.count == 0:
        return float("nan"), float("nan")
    return loop.evaluate(plan.eval_batches(config, "test", shard))


def _stored_result(directory: str) -> PhaseResult | None:
    path = posixpath.join(directory, RESULT_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return PhaseResult(**json.load(f))


def _store_result(directory: str, result: PhaseResult) -> None:
    tf.io.gfile.makedirs(directory)
    path = posixpath.join(directory, RESULT_FILE)
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        json.dump(asdict(result), f)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)

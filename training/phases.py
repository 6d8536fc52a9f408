"""The tutorial's two phases, each resumable, each on images or on an exact cache: compile, resume, train
the missing epochs, evaluate, and store the phase's result with its timings (docs/training.md)."""
from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass

import tensorflow as tf

from publishing import storage
from publishing.gate import say
from training import checkpoints, loops
from training.callbacks import EarlyStopping, EpochLine, Stopwatch, random_state, schedule_callback
from training.config import TrainConfig
from training.data import Datasets
from training.frozen_cache import FrozenParts, Plan
from training.model import Classifier, compile_for, freeze_for_feature_extraction, trainable_parameter_count
from training.model import unfreeze_from
from training.pipeline import Shard

RESULT_FILE = "result.json"


@dataclass
class PhaseResult:
    name: str
    first_epoch: int          # absolute index of the phase's first epoch (0-based)
    epochs: int
    history: dict[str, list[float]]
    seconds: float            # cache_seconds + train_seconds + evaluate_seconds
    train_images: int
    images_per_second: float  # training images x epochs trained / train_seconds
    test_loss: float
    test_accuracy: float
    cached: bool
    trainable_parameters: int
    resumed_at_epoch: int | None = None
    validation_loss: float | None = None      # of the weights the phase ends with
    validation_accuracy: float | None = None
    best_epoch: int | None = None             # early stopping: the absolute epoch whose weights were kept
    stopped_early: bool = False
    cache_seconds: float = 0.0     # building (or finding) the cached inputs
    train_seconds: float = 0.0     # the training steps of every epoch
    evaluate_seconds: float = 0.0  # each epoch's validation and the final validation and test


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
    phase = Phase(checkpoints.FEATURE_EXTRACTION, 0, config.epochs, config.learning_rate)
    return run_phase(phase, config, classifier, data, frozen.feature_extraction_plan(), callbacks, shard)


def fine_tuning(config: TrainConfig, classifier: Classifier, data: Datasets, callbacks=(),
                frozen: FrozenParts | None = None, shard: Shard = Shard()) -> PhaseResult:
    """Phase 2: base trainable from `fine_tune_at`, RMSprop(lr / 10), epochs numbered on."""
    unfreeze_from(classifier, config.fine_tune_at)
    frozen = frozen or FrozenParts(classifier, config, data, shard)
    phase = Phase(checkpoints.FINE_TUNING, config.epochs, config.fine_tune_epochs, config.fine_tune_learning_rate)
    return run_phase(phase, config, classifier, data, frozen.fine_tuning_plan(), callbacks, shard)


def run_phase(phase: Phase, config: TrainConfig, classifier: Classifier, data: Datasets, plan: Plan, callbacks=(),
              shard: Shard = Shard()) -> PhaseResult:
    directory = checkpoints.phase_dir(config.work_dir, phase.name)
    compile_for(plan.model, classifier.num_classes, phase.learning_rate, config.weight_decay, config.label_smoothing)
    history: dict[str, list[float]] = {}
    stopping = _early_stopping(config, plan, data, history)
    checkpoint = checkpoints.PhaseCheckpoint(directory, classifier.model, plan.model.optimizer,
                                             checkpoints.phase_settings(config, phase.name, shard.count,
                                                                        data.identity.get("fingerprint")),
                                             _extra_state(classifier, stopping))
    resumed = checkpoint.restore(plan.model.trainable_variables)
    history.update({k: list(v) for k, v in resumed.history.items()})
    stopped = stopping is not None and stopping.stopped()
    stored = _stored_result(directory)
    if stored is not None and stored.epochs == phase.epochs and (resumed.epoch == phase.last_epoch or stopped):
        if stopping is not None:
            stopping.restore_best()  # the checkpoint holds the last epoch's weights
        say(f"[{phase.name}] already complete in {directory}: test accuracy {stored.test_accuracy:.4f}")
        return stored
    initial_epoch = max(phase.first_epoch, resumed.epoch)
    last_epoch = initial_epoch if stopped else phase.last_epoch
    _say_where_it_starts(phase, resumed, directory, stopped)

    clock = Stopwatch(resumed.seconds)  # the earlier processes' seconds, summed on
    loop = loops.make_loop(plan.model, classifier.num_classes, config.batch_size, config.label_smoothing, clock)
    trainable = trainable_parameter_count(plan.model)
    _prepare_inputs(phase, plan, data, clock)
    say(f"[{phase.name}] {trainable:,} trainable parameters; epochs {initial_epoch + 1}..{last_epoch} "
        f"{plan.description}")
    validation = plan.eval_batches(config, "validation", shard) if data.validation.count else None
    schedule = schedule_callback(config.lr_schedule, phase.learning_rate, phase.first_epoch,
                                                phase.epochs)
    # Order matters: the schedule logs its rate and early stopping copies the best weights before the checkpoint.
    epoch_callbacks = [c for c in (schedule, stopping) if c is not None]
    loops.fit_epochs(loop, lambda epoch: plan.train_batches(config, epoch, shard), validation,
                     initial_epoch, last_epoch,
                     [*epoch_callbacks, checkpoints.EpochCheckpoint(checkpoint, history, lambda: dict(clock.seconds)),
                      EpochLine(phase.name, phase.last_epoch), *callbacks])
    best_epoch = _restore_best(phase, stopping)
    validation_loss, validation_accuracy = _evaluate(loop, plan, config, "validation", data, shard)
    test_loss, test_accuracy = _evaluate(loop, plan, config, "test", data, shard)
    epochs_trained = len(history.get("loss", []))  # by every process, as the train seconds are
    result = PhaseResult(
        name=phase.name, first_epoch=phase.first_epoch, epochs=phase.epochs, history=history,
        seconds=clock["cache"] + clock["train"] + clock["evaluate"], train_images=data.train.count,
        images_per_second=data.train.count * epochs_trained / clock["train"] if clock["train"] else 0.0,
        test_loss=test_loss, test_accuracy=test_accuracy, cached=plan.cached, trainable_parameters=trainable,
        resumed_at_epoch=resumed.epoch or None, validation_loss=validation_loss,
        validation_accuracy=validation_accuracy, best_epoch=best_epoch,
        stopped_early=stopping is not None and stopping.stopped(), cache_seconds=clock["cache"],
        train_seconds=clock["train"], evaluate_seconds=clock["evaluate"])
    _store_result(directory, result)
    say(f"[{phase.name}] test accuracy {test_accuracy:.4f}, loss {test_loss:.4f}; {_timings(result)}")
    return result


def _timings(result: PhaseResult) -> str:
    return (f"{result.seconds:.1f}s: caches {result.cache_seconds:.1f}s, training {result.train_seconds:.1f}s "
            f"({result.images_per_second:.0f} images/s), evaluating {result.evaluate_seconds:.1f}s")


def _early_stopping(config: TrainConfig, plan: Plan, data: Datasets, history: dict):
    if not config.early_stopping_patience:
        return None
    if not data.validation.count:
        say("[early stopping] off: there are no validation images")
        return None
    return EarlyStopping(config.early_stopping_patience, plan.model.trainable_variables, history)


def _extra_state(classifier: Classifier, stopping) -> dict:
    """What the phase checkpoint holds beyond the model and the optimizer."""
    extra = {}
    if stopping is not None:
        extra["best_weights"] = stopping.best_weights
    state = random_state(classifier.model)
    if state:
        extra["random"] = state
    return extra


def _restore_best(phase: Phase, stopping) -> int | None:
    """Early stopping: load the best epoch's weights; that epoch, counted over the job (1-based)."""
    if stopping is None:
        return None
    index = stopping.restore_best()
    if index is None:
        return None
    epoch = phase.first_epoch + index + 1
    stopped = "stopped early; " if stopping.stopped() else ""
    say(f"[{phase.name}] {stopped}restored the weights of epoch {epoch} "
        f"(lowest validation loss {stopping.history['val_loss'][index]:.4f})")
    return epoch


def _say_where_it_starts(phase: Phase, resumed: checkpoints.Resumed, directory: str, stopped: bool) -> None:
    done = resumed.epoch - phase.first_epoch
    if stopped:
        say(f"[{phase.name}] early stopping ended this phase after {done} epochs in a previous run ({directory}): "
            f"training no more")
    elif resumed.epoch and done == phase.epochs:
        say(f"[{phase.name}] all {phase.epochs} epochs were trained in a previous run ({directory})")
    elif resumed.epoch:
        say(f"[{phase.name}] resuming after epoch {resumed.epoch} from {directory}: {done} of {phase.epochs} "
            f"epochs done, training {phase.epochs - done} more")


def _prepare_inputs(phase: Phase, plan: Plan, data: Datasets, clock: Stopwatch) -> None:
    """Build the caches (or find them on disk) before the first epoch, timed as the phase's cache seconds."""
    if not plan.cached:
        return
    before = clock["cache"]
    with clock.timing("cache"):
        for split_name in data.splits():
            plan.examples(split_name)
        plan.train_examples(phase.first_epoch)  # the caches of the training images' other views
    say(f"[{phase.name}] cached inputs ready after {clock['cache'] - before:.1f}s")


def _evaluate(loop, plan: Plan, config: TrainConfig, split_name: str, data: Datasets,
              shard: Shard) -> tuple[float, float]:
    if data.splits()[split_name].count == 0:
        return float("nan"), float("nan")
    return loop.evaluate(plan.eval_batches(config, split_name, shard))


def _stored_result(directory: str) -> PhaseResult | None:
    path = posixpath.join(directory, RESULT_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return PhaseResult(**json.load(f))


def _store_result(directory: str, result: PhaseResult) -> None:
    storage.replace_json(posixpath.join(directory, RESULT_FILE), asdict(result))

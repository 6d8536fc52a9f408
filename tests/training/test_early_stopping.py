"""Early stopping (with dropout and a schedule on) stops where it should, keeps the best epoch's
weights, and a job killed mid-phase resumes to exactly the uninterrupted run's result."""
import dataclasses

import keras
import numpy as np
import pytest

from tests.conftest import TINY_IMG, calibrate_batchnorm, make_image_folder
from training import phases
from training.config import TrainConfig
from training.data import load_image_folder
from training.model import build_classifier


class Killed(Exception):
    pass


class KillAfter(keras.callbacks.Callback):
    """Stands in for SIGKILL after epoch `epoch` was checkpointed (it runs after the checkpoint callback)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise Killed()


class WeightsPerEpoch(keras.callbacks.Callback):
    def __init__(self, model):
        super().__init__()
        self.full_model, self.weights = model, []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.full_model.get_weights())


def _classifier(dropout: float):
    keras.utils.set_random_seed(0)
    classifier = build_classifier(2, TINY_IMG, "none", dropout=dropout, seed=0)
    images = np.random.default_rng(0).uniform(-1, 1, (16, TINY_IMG, TINY_IMG, 3)).astype(np.float32)
    calibrate_batchnorm(classifier.base, images)
    return classifier


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("stopping")
    folder = make_image_folder(root / "photos", per_class=30)
    # A rate high enough that validation loss turns up within a few epochs.
    config = TrainConfig(data_dir=str(folder), img_size=TINY_IMG, batch_size=8, shuffle_buffer=20, epochs=12,
                         fine_tune_epochs=0, weights="none", learning_rate=0.05, early_stopping_patience=2,
                         dropout=0.3, lr_schedule="cosine", work_dir=str(root / "work"))
    return root, config, load_image_folder(str(folder), seed=config.seed)


def _max_difference(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def test_early_stopping_stops_and_keeps_the_best_epochs_weights(setup):
    root, config, data = setup
    clf = _classifier(config.dropout)
    recorder = WeightsPerEpoch(clf.model)
    result = phases.feature_extraction(dataclasses.replace(config, work_dir=str(root / "once")), clf, data,
                                       callbacks=[recorder])
    losses = result.history["val_loss"]
    assert result.stopped_early and len(losses) < config.epochs
    best = int(np.argmin(losses))
    assert len(losses) - 1 - best == config.early_stopping_patience
    assert result.best_epoch == best + 1
    assert _max_difference(clf.model.get_weights(), recorder.weights[best]) == 0
    assert _max_difference(recorder.weights[best], recorder.weights[-1]) > 0, "the last epoch must differ"
    assert result.validation_loss == pytest.approx(losses[best], rel=1e-5)
    assert result.history["learning_rate"][0] == pytest.approx(config.learning_rate)
    assert result.history["learning_rate"][1] < config.learning_rate


def test_a_killed_phase_resumes_to_the_uninterrupted_result(setup):
    root, config, data = setup
    clf = _classifier(config.dropout)
    whole = phases.feature_extraction(dataclasses.replace(config, work_dir=str(root / "whole")), clf, data)
    expected = clf.model.get_weights()
    assert whole.stopped_early
    killed_at = whole.best_epoch + 1  # after the best epoch, before the stop: the patience count is in flight
    work = dataclasses.replace(config, work_dir=str(root / "killed"))
    with pytest.raises(Killed):
        phases.feature_extraction(work, _classifier(config.dropout), data, callbacks=[KillAfter(killed_at)])
    clf = _classifier(config.dropout)  # a new process: fresh model, same work dir
    resumed = phases.feature_extraction(work, clf, data)
    assert resumed.resumed_at_epoch == killed_at
    assert resumed.history == whole.history
    assert resumed.best_epoch == whole.best_epoch and resumed.stopped_early
    assert _max_difference(clf.model.get_weights(), expected) <= 1e-6
    again = _classifier(config.dropout)  # a finished phase: nothing trains, the best weights come back
    assert phases.feature_extraction(work, again, data).test_accuracy == whole.test_accuracy
    assert _max_difference(again.model.get_weights(), expected) <= 1e-6

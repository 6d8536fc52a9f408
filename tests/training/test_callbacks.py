"""Schedules, early stopping's state and the head's dropout behave as documented and survive a checkpoint."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from training import callbacks
from training.callbacks import EarlyStopping


def test_schedules_start_at_the_phase_rate_and_decay_within_the_phase():
    factor = callbacks.learning_rate_factor
    assert [factor("constant", e, 10) for e in (0, 9)] == [1.0, 1.0]
    assert factor("cosine", 0, 10) == 1.0
    assert factor("cosine", 5, 10) == pytest.approx(0.5)
    assert 0 < factor("cosine", 9, 10) < 0.03
    assert [factor("step", e, 8) for e in (0, 3, 4, 5, 6, 7)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        factor("linear", 0, 10)


def test_the_schedule_callback_counts_epochs_from_the_phase_start():
    callback = callbacks.schedule_callback("cosine", 1e-4, first_epoch=10, phase_epochs=4)
    assert callback.schedule(10, 0.0) == pytest.approx(1e-4)
    assert callback.schedule(12, 0.0) == pytest.approx(1e-4 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert callbacks.schedule_callback("constant", 1e-4, 0, 4) is None


def test_stopping_state_is_a_function_of_the_validation_losses():
    assert callbacks.best_epoch([0.5, 0.3, 0.3, 0.4]) == 1
    assert not callbacks.has_stopped([0.5, 0.3, 0.4], patience=2)
    assert callbacks.has_stopped([0.5, 0.3, 0.4, 0.35], patience=2)
    assert not callbacks.has_stopped([0.5, 0.3, 0.4, 0.35], patience=0), "patience 0 means off"


def _toy_model():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="ones")(inputs))


def test_early_stopping_keeps_the_best_weights_stops_and_restores_them():
    model = _toy_model()
    history: dict = {}
    stopping = EarlyStopping(2, model.trainable_variables, history)
    stopping.set_model(model)
    for epoch, (loss, kernel_value) in enumerate([(0.5, 1.0), (0.2, 2.0), (0.4, 3.0), (0.3, 4.0)]):
        model.trainable_variables[0].assign(np.full((3, 1), kernel_value, np.float32))
        model.stop_training = False
        stopping.on_epoch_end(epoch, {"val_loss": loss})
        history.setdefault("val_loss", []).append(loss)  # what the checkpoint callback does after it
    assert model.stop_training and stopping.stopped()
    assert stopping.restore_best() == 1
    np.testing.assert_array_equal(model.trainable_variables[0].numpy(), np.full((3, 1), 2.0))


def test_without_validation_images_early_stopping_is_off_and_says_so(capsys):
    """The only path to a phase without val_loss: EarlyStopping itself never sees one."""
    from types import SimpleNamespace

    from training import phases
    from training.config import TrainConfig

    no_validation = SimpleNamespace(validation=SimpleNamespace(count=0))
    assert phases._early_stopping(TrainConfig(early_stopping_patience=2), None, no_validation, {}) is None
    assert "[early stopping] off: there are no validation images" in capsys.readouterr().out


def test_the_best_weights_and_the_dropout_state_are_restored_from_a_checkpoint(tmp_path):
    inputs = keras.Input((3,))
    dropout = keras.layers.Dropout(0.5, seed=1)
    model = keras.Model(inputs, keras.layers.Dense(1)(dropout(inputs)))
    stopping = EarlyStopping(2, model.trainable_variables, {})
    checkpoint = tf.train.Checkpoint(model=model, best_weights=stopping.best_weights,
                                     random=callbacks.random_state(model))
    stopping.best_weights[0].assign(tf.fill((3, 1), 7.0))
    dropout(tf.ones((4, 3)), training=True)  # advances the random state
    path = checkpoint.save(str(tmp_path / "ckpt"))
    saved_state = callbacks.random_state(model)[0].numpy().copy()
    stopping.best_weights[0].assign(tf.zeros((3, 1)))
    dropout(tf.ones((4, 3)), training=True)
    assert not np.array_equal(callbacks.random_state(model)[0].numpy(), saved_state)
    checkpoint.restore(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(stopping.best_weights[0].numpy(), np.full((3, 1), 7.0))
    np.testing.assert_array_equal(callbacks.random_state(model)[0].numpy(), saved_state)

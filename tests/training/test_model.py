import keras
import numpy as np
import pytest

from tests.conftest import TINY_IMG, calibrate_batchnorm, tiny_classifier
from training.model import (WeightsUnavailable, compile_for, cut_layer_index, freeze_for_feature_extraction,
                            resolve_weights, trainable_parameter_count, unfreeze_from)


@pytest.fixture(scope="module")
def classifier():
    return tiny_classifier()


def test_phase_one_trains_only_the_head(classifier):
    freeze_for_feature_extraction(classifier)
    assert trainable_parameter_count(classifier.model) == 1_281


def test_phase_two_unfreezes_from_layer_100_with_trainable_batchnorm_scales(classifier):
    unfreeze_from(classifier, 100)
    assert trainable_parameter_count(classifier.model) == 1_862_721
    freeze_for_feature_extraction(classifier)


def test_n_class_head_has_one_logit_per_class():
    clf = tiny_classifier(num_classes=5)
    assert clf.model.output_shape == (None, 5)
    assert trainable_parameter_count(clf.model) == 1280 * 5 + 5


def test_natural_cut_for_layer_100_is_block_10_project_bn(classifier):
    cut = cut_layer_index(classifier.base, 100)
    assert classifier.base.layers[cut].name == "block_10_project_BN"


def test_fit_keeps_batchnorm_statistics_of_unfrozen_layers(classifier):
    """keras-team/keras#20285: fit must not switch the base's BN layers to training mode."""
    unfreeze_from(classifier, 100)
    compile_for(classifier.model, 2, 1e-3)
    bn = classifier.base.get_layer("block_16_project_BN")
    before = [np.array(bn.moving_mean), np.array(bn.moving_variance)]
    gamma = np.array(bn.gamma)
    x = np.random.default_rng(0).uniform(-1, 1, (8, TINY_IMG, TINY_IMG, 3)).astype("float32")
    classifier.model.fit(x, np.array([0, 1] * 4), epochs=1, verbose=0)
    np.testing.assert_array_equal(np.array(bn.moving_mean), before[0])
    np.testing.assert_array_equal(np.array(bn.moving_variance), before[1])
    assert not np.array_equal(np.array(bn.gamma), gamma), "gamma should still train"
    freeze_for_feature_extraction(classifier)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsUnavailable, match="weights file not found"):
        resolve_weights(str(tmp_path / "missing.weights.h5"))
    assert resolve_weights("none") is None and resolve_weights("ImageNet") == "imagenet"


def test_keras_model_round_trips_through_a_keras_file(classifier, tmp_path):
    path = tmp_path / "model.keras"
    classifier.model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(1).uniform(-1, 1, (2, TINY_IMG, TINY_IMG, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x, training=False), classifier.model(x, training=False), atol=1e-6)


def test_dropout_before_the_head_drops_in_training_steps_only_and_round_trips(tmp_path):
    import keras as keras_lib

    from training.model import build_classifier

    keras_lib.utils.set_random_seed(0)
    with_dropout = build_classifier(2, TINY_IMG, "none", dropout=0.5, seed=0)
    assert with_dropout.dropout is not None and tiny_classifier().dropout is None
    x = np.random.default_rng(2).uniform(-1, 1, (16, TINY_IMG, TINY_IMG, 3)).astype("float32")
    calibrate_batchnorm(with_dropout.base, x)  # features that vary, so that dropping them shows
    inference = with_dropout.model(x, training=False).numpy()
    np.testing.assert_array_equal(with_dropout.model(x).numpy(), inference)
    assert not np.allclose(with_dropout.model(x, training=True).numpy(), inference), "fit's calls must drop"
    bn = with_dropout.base.get_layer("block_16_project_BN")
    mean = np.array(bn.moving_mean)
    with_dropout.base.trainable = True
    with_dropout.model(x, training=True)
    np.testing.assert_array_equal(np.array(bn.moving_mean), mean)  # the base stays in inference mode
    path = tmp_path / "dropout.keras"
    with_dropout.model.save(path)
    np.testing.assert_allclose(keras_lib.models.load_model(path)(x).numpy(), inference, atol=1e-6)

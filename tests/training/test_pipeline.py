"""The input pipeline's deterministic views: the per-epoch draws depend on (seed, epoch) alone, and taking each image's
drawn view from per-view caches gives exactly the images the end-to-end pipeline draws."""
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import TINY_IMG, make_image_folder
from training import pipeline
from training.config import VIEW_NAMES, TrainConfig, parse_views
from training.data import load_image_folder
from training.pipeline import Shard


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = make_image_folder(tmp_path_factory.mktemp("views") / "photos", per_class=12)
    config = TrainConfig(data_dir=str(folder), img_size=TINY_IMG, batch_size=4, shuffle_buffer=10, weights="none")
    return config, load_image_folder(str(folder), seed=config.seed)


def test_views_parse_a_comma_list_and_refuse_unknown_or_repeated_names():
    assert parse_views("identity, flip") == ("identity", "flip")
    with pytest.raises(ValueError, match="rotate unknown"):
        parse_views("identity,rotate")
    with pytest.raises(ValueError, match="twice"):
        parse_views("flip,flip")


def test_config_names_exactly_the_views_defined_in_the_pipeline():
    assert tuple(pipeline.VIEWS) == VIEW_NAMES


def test_each_epoch_draws_its_own_views_from_the_seed_and_epoch_alone():
    first = pipeline.choices(seed=5, epoch=0, count=400, num_views=3)
    assert np.array_equal(first, pipeline.choices(seed=5, epoch=0, count=400, num_views=3))
    assert not np.array_equal(first, pipeline.choices(seed=5, epoch=1, count=400, num_views=3))
    assert not np.array_equal(first, pipeline.choices(seed=6, epoch=0, count=400, num_views=3))
    assert set(np.unique(first)) == {0, 1, 2}


def test_flip_and_zoom_are_the_mirror_and_the_central_crop():
    image = tf.random.stateless_uniform((32, 32, 3), seed=(1, 2))
    np.testing.assert_array_equal(pipeline.apply_view("flip", image).numpy(), image.numpy()[:, ::-1])
    zoomed = pipeline.apply_view("zoom", image).numpy()
    # the central 28 of 32 pixels (87.5%), scaled back to 32
    np.testing.assert_allclose(zoomed, tf.image.resize(image[2:30, 2:30], (32, 32)).numpy(), atol=1e-6)
    np.testing.assert_allclose(pipeline.apply_view("zoom-flip", image).numpy(), zoomed[:, ::-1])


@pytest.mark.parametrize("shard", [Shard(), Shard(index=1, count=2)])
def test_drawn_views_from_per_view_caches_equal_the_end_to_end_draws(photos, shard):
    config, data = photos
    names = ("identity", "flip", "zoom")
    count = data.train.count
    # What each view's cache holds: that view of this shard's images, in the split's order.
    per_view = [pipeline.view_batches(data.train.images, name, config, shard).unbatch() for name in names]
    for epoch in range(2):
        cached = list(pipeline.drawn_outputs(per_view, config.seed, epoch, count, shard))
        plain = list(pipeline.drawn_examples(pipeline.examples(shard.of(data.train.images), config), names,
                                          config.seed, epoch, count, shard))
        assert len(cached) == len(plain) == len(range(shard.index, count, shard.count))
        for (x_cached, y_cached), (x_plain, y_plain) in zip(cached, plain):
            np.testing.assert_array_equal(x_cached.numpy(), x_plain.numpy())
            assert int(y_cached) == int(y_plain)
    draws = shard.of(tf.data.Dataset.from_tensor_slices(pipeline.choices(config.seed, 0, count, len(names))))
    unflipped = list(pipeline.view_batches(data.train.images, "identity", config, shard).unbatch())
    for choice, (x, _), (original, _) in zip(draws, pipeline.drawn_outputs(per_view, config.seed, 0, count, shard),
                                             unflipped):
        expected = pipeline.apply_view(names[int(choice)], original).numpy()
        np.testing.assert_array_equal(x.numpy(), expected)


def test_batches_run_without_the_autotune_thread_and_keep_their_elements(photos):
    """Deleting an iterator joins tf.data's autotuning thread, which can sleep out its period first
    (pipeline.without_autotune_thread): every training and evaluation pipeline turns it off, unchanged."""
    config, data = photos
    formatted = pipeline.examples(data.train.images, config)
    plain = formatted.batch(config.batch_size)
    batched = pipeline.batches(formatted, config)
    assert plain.options().autotune.enabled is not False  # tf.data's default: on
    assert batched.options().autotune.enabled is False
    assert pipeline.batches(formatted, config, epoch=3).options().autotune.enabled is False
    for (x_plain, y_plain), (x, y) in zip(plain, batched, strict=True):
        np.testing.assert_array_equal(x.numpy(), x_plain.numpy())
        np.testing.assert_array_equal(y.numpy(), y_plain.numpy())

"""The input pipeline: the tutorial's batches of images or of cached outputs, each epoch's order and
view draws a function of (seed, epoch) alone, so a resumed job sees the same batches (docs/training.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from model_api import decision
from model_api.preprocess import format_example
from training.config import IDENTITY, TrainConfig

AUTOTUNE = tf.data.AUTOTUNE
ZOOM_FRACTION = 0.875  # the central 87.5% (Inception's evaluation crop), scaled back to img_size
_CHOICE_STREAM = 7  # keeps the view draws independent of the shuffle, which uses the same epoch seed


@dataclass(frozen=True)
class Shard:
    """This process's part of the data: input pipeline `index` of `count` (one per worker), every
    `count`-th example (tf.data's `shard`), as `distribute_datasets_from_function` expects."""

    index: int = 0
    count: int = 1

    def of(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        return dataset if self.count == 1 else dataset.shard(self.count, self.index)

    def batch_size(self, global_batch_size: int) -> int:
        return global_batch_size // self.count


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle (and augmentation) seed of one epoch: depends on nothing but (seed, epoch)."""
    return (seed * 1_000_003 + epoch) % (2 ** 31 - 1)


# --- the tutorial's pipeline ----------------------------------------------------------------------

def examples(images: tf.data.Dataset, config: TrainConfig) -> tf.data.Dataset:
    """(uint8 image, label) -> the tutorial's format_example: float32 in [-1, 1], resized."""
    return images.map(lambda image, label: (format_example(image, config.img_size), label),
                      num_parallel_calls=AUTOTUNE)


def batches(dataset: tf.data.Dataset, config: TrainConfig, epoch: int | None = None, augment: bool = False,
            shard: Shard = Shard()) -> tf.data.Dataset:
    """Batches of this shard's (input, label) in their fixed order, shuffled for `epoch` when it is given.

    A shuffle depends only on the element count, the buffer and the seed (no reshuffling), so images
    and their cached outputs, stored in the same order, come out in the same order too."""
    if epoch is not None:
        dataset = dataset.shuffle(config.shuffle_buffer, seed=epoch_seed(config.seed, epoch),
                                  reshuffle_each_iteration=False)
    dataset = dataset.batch(shard.batch_size(config.batch_size))
    if augment:
        seed = epoch_seed(config.seed, 0 if epoch is None else epoch)
        augmenter = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=seed),
                                      keras.layers.RandomRotation(0.2, seed=seed)])
        dataset = dataset.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=AUTOTUNE)
    return without_autotune_thread(dataset.prefetch(AUTOTUNE))


def without_autotune_thread(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The same elements in the same order, iterated without tf.data's autotuning thread.

    Deleting an iterator (fit and evaluate make one per epoch) joins that thread, and it often misses
    the cancellation: Model::OptimizeLoop (tensorflow/core/framework/model.cc) wakes on the cancel
    callback's notify but re-checks IsCancelled() before StartCancel sets it (tsl/framework/cancellation.cc),
    then sleeps out its optimisation period. Seen with gdb on 2 cores: half of phase 2's epochs idled ~18 s
    at their end (docs/benchmarks.md). AUTOTUNE settings then keep tf.data's defaults (parallelism up to the
    cores), which is all these pipelines need: they read caches or decode ahead of a network step.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def image_batches(images: tf.data.Dataset, config: TrainConfig, epoch: int | None = None, augment: bool = False,
                  shard: Shard = Shard()) -> tf.data.Dataset:
    """The tutorial's pipeline over this shard of a split's images."""
    return batches(examples(shard.of(images), config), config, epoch, augment, shard)


# --- deterministic views (--views): augmentation the caches can hold ------------------------------

def _zoom(image: tf.Tensor) -> tf.Tensor:
    size = tf.shape(image)[-3:-1]
    return tf.image.resize(tf.image.central_crop(image, ZOOM_FRACTION), size)


VIEWS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {  # act on format_example's output
    IDENTITY: lambda image: image,
    "flip": decision.mirror,  # the mirror --tta flip serves, as the tutorial's RandomFlip("horizontal")
    "zoom": _zoom,
    "zoom-flip": lambda image: decision.mirror(_zoom(image)),
}


def apply_view(name: str, image: tf.Tensor) -> tf.Tensor:
    """One view of a formatted image [H, W, 3] or batch [N, H, W, 3]."""
    return VIEWS[name](image)


def choices(seed: int, epoch: int, count: int, num_views: int) -> np.ndarray:
    """The view index of each of the split's `count` images in `epoch`, in the split's order."""
    rng = np.random.default_rng([epoch_seed(seed, epoch), _CHOICE_STREAM])
    return rng.integers(0, num_views, size=count, dtype=np.int64)


def _choice_dataset(seed: int, epoch: int, count: int, num_views: int, shard: Shard) -> tf.data.Dataset:
    """This shard's draws, aligned with `shard.of(split)` element by element."""
    return shard.of(tf.data.Dataset.from_tensor_slices(choices(seed, epoch, count, num_views)))


def drawn_examples(formatted: tf.data.Dataset, names: Sequence[str], seed: int, epoch: int, count: int,
                   shard: Shard = Shard()) -> tf.data.Dataset:
    """End to end: each (formatted image, label) of the split in the view drawn for it this epoch.

    `formatted` is this shard's examples in the split's order; `count` the whole split's size.
    """
    views = [VIEWS[name] for name in names]

    def view_of(choice, image):
        return tf.switch_case(tf.cast(choice, tf.int32), [lambda view=view: view(image) for view in views])

    draws = _choice_dataset(seed, epoch, count, len(views), shard)
    return tf.data.Dataset.zip(draws, formatted).map(lambda choice, example: (view_of(choice, example[0]), example[1]),
                                                     num_parallel_calls=AUTOTUNE)


def drawn_outputs(per_view: Sequence[tf.data.Dataset], seed: int, epoch: int, count: int,
                  shard: Shard = Shard()) -> tf.data.Dataset:
    """Cached: each (output, label) taken from the cache of the view drawn for it this epoch.

    `per_view[i]` holds view i's outputs of this shard in the split's order (so element k of
    every cache is the same image): all are read in step and the drawn one is kept.
    """
    draws = _choice_dataset(seed, epoch, count, len(per_view), shard)

    def pick(choice, *elements):
        outputs = tf.stack([output for output, _ in elements])
        return tf.gather(outputs, choice), elements[0][1]

    return tf.data.Dataset.zip(draws, *per_view).map(pick, num_parallel_calls=AUTOTUNE)


def view_batches(images: tf.data.Dataset, name: str, config: TrainConfig, shard: Shard = Shard()) -> tf.data.Dataset:
    """A view of this shard's images, formatted and batched in the split's order: what a view's cache holds."""
    formatted = examples(shard.of(images), config)
    if name != IDENTITY:
        formatted = formatted.map(lambda image, label: (apply_view(name, image), label), num_parallel_calls=AUTOTUNE)
    return batches(formatted, config, shard=shard)

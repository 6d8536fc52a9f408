"""Input pipelines: the tutorial's batches, of images or of cached frozen outputs, in one order.

The tutorial's pipeline is `train.map(format_example).shuffle(1000).batch(32)`. Here every
epoch's order is a function of (seed, epoch) alone: the shuffle of epoch `e` is seeded with
`epoch_seed(seed, e)` and does not reshuffle, so a job resumed at epoch `e` sees exactly the
batches an uninterrupted job would (tests/training/test_resume.py). A shuffle depends only on
the element count, the buffer size and the seed, so images and their cached outputs, stored
in the same order, come out in the same order too (tests/training/test_phases.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf

from training.config import TrainConfig
from model_api.preprocess import format_example

AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class Shard:
    """This process's part of the data: input pipeline `index` of `count` (one per worker).

    A multi-worker job gives each worker every `count`-th example (tf.data's `shard`), as
    `distribute_datasets_from_function` expects; one process reads everything.
    """

    index: int = 0
    count: int = 1

    def of(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        return dataset if self.count == 1 else dataset.shard(self.count, self.index)

    def batch_size(self, global_batch_size: int) -> int:
        return global_batch_size // self.count


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle (and augmentation) seed of one epoch: depends on nothing but (seed, epoch)."""
    return (seed * 1_000_003 + epoch) % (2 ** 31 - 1)


def examples(images: tf.data.Dataset, config: TrainConfig) -> tf.data.Dataset:
    """(uint8 image, label) -> the tutorial's format_example: float32 in [-1, 1], resized."""
    return images.map(lambda image, label: (format_example(image, config.img_size), label),
                      num_parallel_calls=AUTOTUNE)


def batches(dataset: tf.data.Dataset, config: TrainConfig, epoch: int | None = None, augment: bool = False,
            shard: Shard = Shard()) -> tf.data.Dataset:
    """Batches of (input, label); shuffled for `epoch` when it is given, in order otherwise.

    `dataset` is this shard's examples (images or cached outputs) in their fixed order.
    """
    if epoch is not None:
        dataset = dataset.shuffle(config.shuffle_buffer, seed=epoch_seed(config.seed, epoch),
                                  reshuffle_each_iteration=False)
    dataset = dataset.batch(shard.batch_size(config.batch_size))
    if augment:
        seed = epoch_seed(config.seed, 0 if epoch is None else epoch)
        augmenter = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=seed),
                                      keras.layers.RandomRotation(0.2, seed=seed)])
        dataset = dataset.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def image_batches(images: tf.data.Dataset, config: TrainConfig, epoch: int | None = None, augment: bool = False,
                  shard: Shard = Shard()) -> tf.data.Dataset:
    """The tutorial's pipeline over this shard of a split's images."""
    return batches(examples(shard.of(images), config), config, epoch, augment, shard)

"""Augmentation the caches can hold: a fixed set of deterministic views, one drawn per image per epoch.

Random augmentation (`--augment`: flips and rotations drawn afresh every step) changes every
input of every epoch, so nothing below it can be cached. Here the augmentation is instead a
finite set of deterministic *views* of each formatted image (`--views identity,flip`): each
view's frozen outputs are computed once, and every epoch trains each training image in one
view drawn by the epoch's seeded generator (`choices`, a function of (seed, epoch) alone, so
a resumed job draws what an uninterrupted one would). That is exactly random augmentation
with values from this set; tests/training/test_views.py proves that training on the cached
views gives the weights of training end to end with the same draws.

Views act on the output of the tutorial's `format_example` (float32 in [-1, 1], img_size
square). Validation and test images are always seen as they are (the identity view).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from training import inputs
from model_api import decision
from training.config import IDENTITY
from training.inputs import AUTOTUNE, Shard, epoch_seed

ZOOM_FRACTION = 0.875  # the central 87.5% (Inception's evaluation crop), scaled back to img_size
_CHOICE_STREAM = 7  # keeps the view draws independent of the shuffle, which uses the same epoch seed


def _zoom(image: tf.Tensor) -> tf.Tensor:
    size = tf.shape(image)[-3:-1]
    return tf.image.resize(tf.image.central_crop(image, ZOOM_FRACTION), size)


VIEWS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    IDENTITY: lambda image: image,
    "flip": decision.mirror,  # the mirror --tta flip serves, as the tutorial's RandomFlip("horizontal")
    "zoom": _zoom,
    "zoom-flip": lambda image: decision.mirror(_zoom(image)),
}


def apply(name: str, image: tf.Tensor) -> tf.Tensor:
    """One view of a formatted image [H, W, 3] or batch [N, H, W, 3]."""
    return VIEWS[name](image)


def choices(seed: int, epoch: int, count: int, num_views: int) -> np.ndarray:
    """The view index of each of the split's `count` images in `epoch`, in the split's order."""
    rng = np.random.default_rng([epoch_seed(seed, epoch), _CHOICE_STREAM])
    return rng.integers(0, num_views, size=count, dtype=np.int64)


def _choice_dataset(seed: int, epoch: int, count: int, num_views: int, shard: Shard) -> tf.data.Dataset:
    """This shard's draws, aligned with `shard.of(split)` element by element."""
    return shard.of(tf.data.Dataset.from_tensor_slices(choices(seed, epoch, count, num_views)))


def drawn_examples(examples: tf.data.Dataset, names: Sequence[str], seed: int, epoch: int, count: int,
                   shard: Shard = Shard()) -> tf.data.Dataset:
    """End to end: each (formatted image, label) of the split in the view drawn for it this epoch.

    `examples` is this shard's examples in the split's order; `count` the whole split's size.
    """
    views = [VIEWS[name] for name in names]

    def view_of(choice, image):
        return tf.switch_case(tf.cast(choice, tf.int32), [lambda view=view: view(image) for view in views])

    draws = _choice_dataset(seed, epoch, count, len(views), shard)
    return tf.data.Dataset.zip(draws, examples).map(lambda choice, example: (view_of(choice, example[0]), example[1]),
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


def view_batches(images: tf.data.Dataset, name: str, config, shard: Shard = Shard()) -> tf.data.Dataset:
    """A view of this shard's images, formatted and batched in the split's order: what a view's cache holds."""
    examples = inputs.examples(shard.of(images), config)
    if name != IDENTITY:
        examples = examples.map(lambda image, label: (apply(name, image), label), num_parallel_calls=AUTOTUNE)
    return inputs.batches(examples, config, shard=shard)

"""What each phase trains, and on what: images end to end, or the cached output of the trunk.

(The parts of the network - base, pool, head, cut, trunk, top - are defined in training/model.py.)

Phase 1, feature extraction: the whole base is frozen and in inference mode, so each image's
features never change: they are cached and only the head trains on them.
Phase 2, fine-tuning: the trunk is frozen and in inference mode, so its output per image is
cached and only the top (in inference mode too: training/model.py), pool and head run each epoch.
When phase 2 has a cut, phase 1 derives its features from the same trunk cache (features =
pool(top(trunk output)) with the top still frozen): one pass over the images for the job.
Same mathematics as the tutorial's pipeline, same batches in the same order;
tests/training/test_phases.py proves it. With --views (training/views.py) each view of the
training images has its own caches and every epoch takes each image from the cache of the view
drawn for it. With --augment or --no-cache both phases train end to end on images.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Callable

import keras
import tensorflow as tf

from training import inputs, views
from training.caches import Caches
from training.checkpoints import DATA_FINGERPRINT
from training.config import CACHE, IDENTITY, TrainConfig, is_plain_views, parse_views, settings
from training.data import Datasets
from training.inputs import Shard
from training.model import Classifier, cut_layer_index, split_at



def cache_settings(config: TrainConfig, data: Datasets) -> dict:
    """What the cached outputs depend on: the CACHE settings and the data's content (the cache's name
    holds the cut layer and the view)."""
    return {**settings(config, CACHE), DATA_FINGERPRINT: data.identity.get("fingerprint")}


@dataclass
class Plan:
    """A phase's model and its examples: (input, label) per split, unbatched, in split order;
    the training examples of an epoch in the views drawn for it."""

    model: keras.Model
    examples: Callable[[str], tf.data.Dataset]
    train_examples: Callable[[int], tf.data.Dataset]
    cached: bool
    description: str

    def train_batches(self, config: TrainConfig, epoch: int, shard: Shard) -> tf.data.Dataset:
        return inputs.batches(self.train_examples(epoch), config, epoch, augment=config.augment, shard=shard)

    def eval_batches(self, config: TrainConfig, split_name: str, shard: Shard) -> tf.data.Dataset:
        return inputs.batches(self.examples(split_name), config, shard=shard)


class FrozenParts:
    """The frozen parts' outputs for one job, cached in `<work>/caches` and shared by both phases."""

    def __init__(self, classifier: Classifier, config: TrainConfig, data: Datasets, shard: Shard = Shard()):
        self.classifier, self.config, self.data, self.shard = classifier, config, data, shard
        self.caches = Caches(posixpath.join(config.work_dir, "caches"), cache_settings(config, data), shard)
        self.use_caches = config.cache and not config.augment
        self.views = parse_views(config.views)
        wants_cut = self.use_caches and config.fine_tune_epochs > 0  # else phase 1 caches features only
        cut = cut_layer_index(classifier.base, config.fine_tune_at) if wants_cut else 0
        self.cut = cut if 0 < cut < len(classifier.base.layers) - 1 else None
        self._trunk_and_top = None
        self._features = None
        self._loaded: dict = {}

    # --- the network cut in two ---------------------------------------------------------------
    def trunk_and_top(self) -> tuple[keras.Model, keras.Model]:
        if self._trunk_and_top is None:
            self._trunk_and_top = split_at(self.classifier.base, self.cut)
        return self._trunk_and_top

    def cut_name(self) -> str:
        return self.classifier.base.layers[self.cut].name

    def _features_model(self) -> keras.Model:
        """Images (no cut) or the trunk's output (a cut) -> features, every layer frozen."""
        clf = self.classifier
        if self._features is None and self.cut is None:
            self._features = keras.Model(clf.base.input, clf.pool(clf.base.output), name="base_and_pool")
        elif self._features is None:
            _, top = self.trunk_and_top()
            cut_input = keras.Input(top.input.shape[1:])
            self._features = keras.Model(cut_input, clf.pool(top(cut_input, training=False)), name="top_and_pool")
        return self._features

    # --- cached examples ------------------------------------------------------------------------
    def _images(self, split_name: str, view: str) -> tf.data.Dataset:
        return views.view_batches(self.data.splits()[split_name].images, view, self.config, self.shard)

    def _cached(self, name: str, split_name: str, model: keras.Model, source: Callable[[], tf.data.Dataset]):
        key = (name, split_name)
        if key not in self._loaded:
            count = self.data.splits()[split_name].count
            self._loaded[key] = self.caches.outputs(name, split_name, model, source, count)
        return self._loaded[key]

    def trunk_outputs(self, split_name: str, view: str = IDENTITY) -> tf.data.Dataset:
        trunk, _ = self.trunk_and_top()
        return self._cached(f"trunk-{self.cut_name()}{_suffix(view)}", split_name, trunk,
                            lambda: self._images(split_name, view))

    def features(self, split_name: str, view: str = IDENTITY) -> tf.data.Dataset:
        if self.cut is None:
            return self._cached(f"features-base{_suffix(view)}", split_name, self._features_model(),
                                lambda: self._images(split_name, view))
        return self._cached(f"features-{self.cut_name()}{_suffix(view)}", split_name, self._features_model(),
                            lambda: inputs.batches(self.trunk_outputs(split_name, view), self.config,
                                                   shard=self.shard))

    def images(self, split_name: str) -> tf.data.Dataset:
        return inputs.examples(self.shard.of(self.data.splits()[split_name].images), self.config)

    # --- an epoch's training examples, in the drawn views -------------------------------------------
    def _drawn(self, outputs: Callable[[str, str], tf.data.Dataset]) -> Callable[[int], tf.data.Dataset]:
        """epoch -> each training image's cached output in the view drawn for it (training/views.py)."""
        if is_plain_views(self.views):
            return lambda epoch: outputs("train", IDENTITY)
        count = self.data.train.count
        return lambda epoch: views.drawn_outputs([outputs("train", view) for view in self.views],
                                                 self.config.seed, epoch, count, self.shard)

    def _drawn_images(self, epoch: int) -> tf.data.Dataset:
        if is_plain_views(self.views):
            return self.images("train")
        return views.drawn_examples(self.images("train"), self.views, self.config.seed, epoch,
                                    self.data.train.count, self.shard)

    # --- the two phases' plans ----------------------------------------------------------------
    def end_to_end(self) -> Plan:
        return Plan(self.classifier.model, self.images, self._drawn_images, cached=False, description="end to end")

    def feature_extraction_plan(self) -> Plan:
        if not self.use_caches:
            return self.end_to_end()
        features = keras.Input(self.classifier.pool.output.shape[1:], name="features")
        head_model = keras.Model(features, self.classifier.logits(features), name="head")
        return Plan(head_model, self.features, self._drawn(self.features), cached=True,
                    description="on cached features" + _views_note(self.views))

    def fine_tuning_plan(self) -> Plan:
        if not self.use_caches:
            return self.end_to_end()
        if self.cut is None:
            if cut_layer_index(self.classifier.base, self.config.fine_tune_at) == 0:
                return self.end_to_end()  # layers from the first one train: nothing is frozen
            return self.feature_extraction_plan()  # the whole base stays frozen: the head trains alone
        clf = self.classifier
        _, top = self.trunk_and_top()
        cut_input = keras.Input(top.input.shape[1:], name="cut_" + self.cut_name())
        outputs = clf.logits(clf.pool(top(cut_input, training=False)))
        return Plan(keras.Model(cut_input, outputs, name="top_and_head"), self.trunk_outputs,
                    self._drawn(self.trunk_outputs), cached=True,
                    description=f"on the cached trunk ({self.cut_name()} {tuple(top.input.shape[1:])})"
                                + _views_note(self.views))


def _suffix(view: str) -> str:
    """Cache names: the identity keeps the tutorial's names, another view adds its own."""
    return "" if view == IDENTITY else f"-{view}"


def _views_note(names) -> str:
    return "" if is_plain_views(names) else f", training images in views {'/'.join(names)}"

"""Frozen-part caching: what each phase trains on (images end to end, or the cached output of the frozen
base or trunk) and the caches themselves, written once into `<work>/caches` (docs/training.md)."""
from __future__ import annotations

import json
import posixpath
import time
from dataclasses import dataclass
from typing import Callable

import keras
import tensorflow as tf

from publishing import storage
from training import pipeline
from publishing.gate import say
from training.checkpoints import DATA_FINGERPRINT
from training.config import CACHE, IDENTITY, TrainConfig, is_plain_views, parse_views, settings
from training.data import Datasets
from training.model import Classifier, cut_layer_index, split_at
from training.pipeline import Shard

MARKER_SUFFIX = ".json"


def cache_settings(config: TrainConfig, data: Datasets) -> dict:
    """What the cached outputs depend on: the CACHE settings and the data's content (the cache's name
    holds the cut layer and the view)."""
    return {**settings(config, CACHE), DATA_FINGERPRINT: data.identity.get("fingerprint")}


# --- the cache files -------------------------------------------------------------------------------

class Caches:
    """`tf.data.Dataset.save` directories (one shard, so they load in the split's order), each beside a
    `<cache>.json` marker written after the save completed: a cache whose marker differs is recomputed."""

    def __init__(self, directory: str, settings: dict, shard: Shard = Shard()):
        self.directory = directory
        self.settings = settings
        self.shard = shard  # each worker computes and reads only its own shard
        self.seconds = 0.0  # spent computing caches in this process
        self._runners: dict = {}  # one traced function per model

    def _path(self, name: str, split_name: str) -> str:
        suffix = "" if self.shard.count == 1 else f"-shard{self.shard.index}of{self.shard.count}"
        return posixpath.join(self.directory, f"{name}-{split_name}{suffix}")

    def _identity(self, name: str, split_name: str, source_count: int) -> dict:
        return {"cache": name, "split": split_name, "examples": source_count,
                "shard": [self.shard.index, self.shard.count], "settings": self.settings}

    def _runner(self, model: keras.Model):
        """model(x) traced once for any batch size. Inputs are cast to the model's input dtype
        first: under mixed precision a float16 trunk output feeds a float32 Input, which the
        next layer casts back to float16 (lossless both ways, as in the uncut model)."""
        if id(model) not in self._runners:
            source = tf.TensorSpec([None, *model.input.shape[1:]], tf.as_dtype(model.input.dtype))
            traced = tf.function(lambda x: model(x, training=False), input_signature=[source])
            self._runners[id(model)] = lambda x: traced(tf.cast(x, source.dtype))
        return self._runners[id(model)]

    def outputs(self, name: str, split_name: str, model: keras.Model, source_batches: Callable[[], tf.data.Dataset],
                source_count: int) -> tf.data.Dataset:
        """(model output, label) for every example of a split, in the split's order, streamed from disk;
        `source_batches()` (the model's inputs, batched, in order) is called only to (re)compute it."""
        path = self._path(name, split_name)
        identity = self._identity(name, split_name, source_count)
        if _read_marker(path) != identity:
            started = time.perf_counter()
            _write(path, self._runner(model), model, source_batches())
            storage.replace_json(path + MARKER_SUFFIX, identity)  # written whole or not at all
            self.seconds += time.perf_counter() - started
        else:
            say(f"[cache] reusing {path}")
        return tf.data.Dataset.load(path)


def _read_marker(path: str) -> dict | None:
    """The marker's identity; None when absent or unreadable (the cache is then rebuilt)."""
    marker = path + MARKER_SUFFIX
    if not tf.io.gfile.exists(marker):
        return None
    try:
        with tf.io.gfile.GFile(marker) as f:
            return json.load(f)
    except (ValueError, tf.errors.OpError) as err:
        say(f"[cache] rebuilding {path}: its marker is unreadable ({str(err).splitlines()[0]})")
        return None


def _write(path: str, run, model: keras.Model, source_batches: tf.data.Dataset) -> None:
    """Stream `run(x)` (= model(x)) for every batch into a one-shard `Dataset.save` directory."""
    if tf.io.gfile.exists(path + MARKER_SUFFIX):
        tf.io.gfile.remove(path + MARKER_SUFFIX)
    if tf.io.gfile.exists(path):
        storage.remove_tree(path)  # a save that was killed half-way
    output = tf.TensorSpec([None, *model.output.shape[1:]], tf.as_dtype(model.output.dtype))
    labels = tf.TensorSpec([None], tf.int64)

    def generate():
        for inputs, batch_labels in source_batches:
            yield run(inputs), batch_labels

    outputs = pipeline.without_autotune_thread(
        tf.data.Dataset.from_generator(generate, output_signature=(output, labels)).unbatch())
    outputs.save(path, shard_func=lambda *_: tf.constant(0, tf.int64))


# --- what each phase trains on ---------------------------------------------------------------------

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
        return pipeline.batches(self.train_examples(epoch), config, epoch, augment=config.augment, shard=shard)

    def eval_batches(self, config: TrainConfig, split_name: str, shard: Shard) -> tf.data.Dataset:
        return pipeline.batches(self.examples(split_name), config, shard=shard)


class FrozenParts:
    """The frozen parts' outputs for one job, shared by both phases: phase 2 trains the top and head on
    the cached trunk, phase 1 the head on features derived from the same cache (one pass over the images)."""

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
        return pipeline.view_batches(self.data.splits()[split_name].images, view, self.config, self.shard)

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
                            lambda: pipeline.batches(self.trunk_outputs(split_name, view), self.config,
                                                     shard=self.shard))

    def images(self, split_name: str) -> tf.data.Dataset:
        return pipeline.examples(self.shard.of(self.data.splits()[split_name].images), self.config)

    # --- an epoch's training examples, in the drawn views -------------------------------------------
    def _drawn(self, outputs: Callable[[str, str], tf.data.Dataset]) -> Callable[[int], tf.data.Dataset]:
        """epoch -> each training image's cached output in the view drawn for it."""
        if is_plain_views(self.views):
            return lambda epoch: outputs("train", IDENTITY)
        count = self.data.train.count
        return lambda epoch: pipeline.drawn_outputs([outputs("train", view) for view in self.views],
                                                    self.config.seed, epoch, count, self.shard)

    def _drawn_images(self, epoch: int) -> tf.data.Dataset:
        if is_plain_views(self.views):
            return self.images("train")
        return pipeline.drawn_examples(self.images("train"), self.views, self.config.seed, epoch,
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

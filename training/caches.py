"""Frozen outputs written once into the work dir and streamed from there every epoch.

A layer that is frozen and runs in inference mode gives the same output for an image in
every epoch, so the job computes it once per image. Each cache is a `tf.data.Dataset.save`
directory (one shard, so `Dataset.load` streams the elements back in the order they were
written: the split's order, which keeps the shuffle exact) beside a `<cache>.json` marker
written only after the save completed. The marker holds what the outputs depend on; a
restarted job reuses a cache whose marker matches and recomputes any other. Memory stays
flat whatever the number of images: nothing is held in RAM beyond tf.data's buffers.

In a multi-worker job each worker computes and reads only its own shard of every split.
"""
from __future__ import annotations

import json
import posixpath
import time
from typing import Callable

import keras
import tensorflow as tf

from publishing import storage
from training.inputs import Shard
from training.progress import say

MARKER_SUFFIX = ".json"


class Caches:
    def __init__(self, directory: str, settings: dict, shard: Shard = Shard()):
        self.directory = directory
        self.settings = settings
        self.shard = shard
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
        """(model output, label) for every example of a split, in the split's order, from disk.

        `source_batches()` gives the model's inputs in batches, in order; it is only called
        when the cache must be (re)computed.
        """
        path = self._path(name, split_name)
        identity = self._identity(name, split_name, source_count)
        if _read_marker(path) != identity:
            started = time.perf_counter()
            _write(path, self._runner(model), model, source_batches())
            _write_marker(path, identity)
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


def _write_marker(path: str, identity: dict) -> None:
    storage.replace_json(path + MARKER_SUFFIX, identity)  # written whole or not at all


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

    outputs = tf.data.Dataset.from_generator(generate, output_signature=(output, labels)).unbatch()
    outputs.save(path, shard_func=lambda *_: tf.constant(0, tf.int64))

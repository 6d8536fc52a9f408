"""The datasets of (uint8 RGB image, int label), from TFDS or from a folder per class (split 80/10/10 by
class, seeded; read through tf.io.gfile), undecodable files skipped and counted, never fatal."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import tensorflow as tf

from model_api.image_folder import FolderError, read_image_folder
from training import data_identity
from publishing import storage
from training.config import FOLDER_FRACTIONS, TrainConfig
from model_api.preprocess import decode_rgb

AUTOTUNE = tf.data.AUTOTUNE


class DataError(RuntimeError):
    """The data cannot be used: unknown dataset, empty or one-class folder, download failure."""


@dataclass
class Split:
    images: tf.data.Dataset  # (uint8 [H, W, 3], int64 label), finite, in a fixed order
    count: int
    skipped: int = 0
    skipped_files: list = field(default_factory=list)  # (path, reason) for the first few


@dataclass
class Datasets:
    train: Split
    validation: Split
    test: Split
    class_names: list[str]
    source: str  # "tfds:<name>" or the data folder
    identity: dict = field(default_factory=dict)  # what the data is, by content (training/data_identity.py)

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def load(config: TrainConfig) -> Datasets:
    if config.data_dir:
        return load_image_folder(config.data_dir, seed=config.seed, max_images=config.max_images)
    return load_tfds(config)


# --- image folder -----------------------------------------------------------------------

def list_image_folder(data_dir: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names and (path, label) for every file: the layout of model_api/image_folder.py."""
    try:
        return read_image_folder(data_dir)
    except FolderError as err:
        raise DataError(str(err)) from None


def _by_label(files: list[tuple[str, int]]) -> dict[int, list]:
    groups: dict[int, list] = {}
    for item in files:
        groups.setdefault(item[1], []).append(item)
    return groups


def stratified_split(files: list[tuple[str, int]], seed: int, fractions=FOLDER_FRACTIONS) -> list[list]:
    """Split each class by `fractions` after a seeded shuffle; every split keeps class balance."""
    rng = random.Random(seed)
    by_label = _by_label(files)
    parts: list[list] = [[] for _ in fractions]
    for label in sorted(by_label):
        items = by_label[label]
        rng.shuffle(items)
        n = len(items)
        n_train = round(n * fractions[0])
        n_val = round(n * fractions[1])
        bounds = [0, n_train, n_train + n_val, n]
        for i in range(len(fractions)):
            parts[i].extend(items[bounds[i]:bounds[i + 1]])
    for part in parts:
        rng.shuffle(part)
    return parts


def subsample(files: list[tuple[str, int]], max_images: int, seed: int) -> list[tuple[str, int]]:
    """A seeded, class-balanced subset of `max_images` files (at least one per class)."""
    rng = random.Random(seed)
    by_label = _by_label(files)
    chosen = []
    for label in sorted(by_label):
        items = sorted(by_label[label])
        rng.shuffle(items)
        chosen.extend(items[:max(1, round(len(items) * max_images / len(files)))])
    return sorted(chosen)


def load_image_folder(data_dir: str, seed: int = 1337, max_images: int = 0) -> Datasets:
    class_names, files = list_image_folder(data_dir)
    identity = data_identity.folder_identity(data_dir, class_names, files)  # the whole folder, as listed
    if max_images and max_images < len(files):
        files = subsample(files, max_images, seed)
    parts = stratified_split(files, seed)
    splits = [_folder_split(part) for part in parts]
    return Datasets(*splits, class_names=class_names,
                    source=os.path.abspath(data_dir) if storage.is_local(data_dir) else data_dir, identity=identity)


def _read_and_decode(path, label):
    return decode_rgb(tf.io.read_file(path)), label


def _decodable(items: list[tuple[str, int]]) -> list[bool]:
    """Decode every file once, in parallel, with the same decoder as training."""
    if not items:
        return []
    paths = tf.constant([p for p, _ in items])
    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(items), dtype=tf.int64), paths))
    ds = ds.map(lambda i, p: (i, tf.shape(decode_rgb(tf.io.read_file(p)))), num_parallel_calls=AUTOTUNE,
                deterministic=False)
    ds = ds.ignore_errors().batch(1024)
    ok = [False] * len(items)
    for indices, shapes in ds:
        for i, shape in zip(indices.numpy(), shapes.numpy()):
            ok[i] = bool(shape[0] > 0 and shape[1] > 0)
    return ok


def _failure_reason(path: str) -> str:
    try:
        data = tf.io.read_file(path)
        if int(tf.strings.length(data)) == 0:
            return "empty file"
        decode_rgb(data)
        return "empty image"
    except tf.errors.OpError as err:
        return (err.message or type(err).__name__).strip().splitlines()[0][:200]


def _folder_split(items: list[tuple[str, int]]) -> Split:
    ok = _decodable(items)
    good = [item for item, fine in zip(items, ok) if fine]
    bad = [item[0] for item, fine in zip(items, ok) if not fine]
    skipped_files = [(path, _failure_reason(path)) for path in bad[:20]]
    paths = tf.constant([p for p, _ in good], dtype=tf.string)
    labels = tf.constant([lab for _, lab in good], dtype=tf.int64)
    images = tf.data.Dataset.from_tensor_slices((paths, labels)).map(_read_and_decode, num_parallel_calls=AUTOTUNE)
    return Split(images=images, count=len(good), skipped=len(bad), skipped_files=skipped_files)


# --- TFDS ---------------------------------------------------------------------------------

def load_tfds(config: TrainConfig) -> Datasets:
    import tensorflow_datasets as tfds  # imported lazily: slow, and unneeded for folders

    name = config.dataset
    try:
        builder = tfds.builder(name, data_dir=config.tfds_data_dir)
    except tfds.core.registered.DatasetNotFoundError as err:
        raise DataError(f"unknown TFDS dataset {name!r}; see https://www.tensorflow.org/datasets/catalog "
                        "or use --data-dir with one folder per class") from err
    features = builder.info.features
    if "image" not in features or "label" not in features or not hasattr(features["label"], "names"):
        raise DataError(f"TFDS dataset {name!r} is not an image-classification dataset (needs image and label)")
    if not _is_prepared(builder):
        _check_download_reachable(name)
    try:
        builder.download_and_prepare()
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise DataError(f"could not download or prepare TFDS dataset {name!r} (is this machine offline? "
                        f"use --tfds-data-dir with a prepared copy, or --data-dir): {first}") from err
    class_names = list(features["label"].names)
    split_specs = (config.train_split, config.validation_split, config.test_split)
    counts = [builder.info.splits[spec].num_examples for spec in split_specs]
    total = sum(counts)
    splits = []
    for spec, count in zip(split_specs, counts):
        ds = builder.as_dataset(split=spec, as_supervised=True, shuffle_files=False)
        if config.max_images and config.max_images < total:
            count = max(1, round(config.max_images * count / total))
            ds = ds.take(count)
        ds = ds.map(_to_rgb_uint8, num_parallel_calls=AUTOTUNE)
        splits.append(Split(images=ds, count=count))
    return Datasets(*splits, class_names=class_names, source=f"tfds:{name}",
                    identity=data_identity.tfds_identity(builder.info))


def _is_prepared(builder) -> bool:
    try:
        return bool(builder.is_prepared())
    except Exception:  # noqa: BLE001 - older TFDS: assume not, the check below is cheap
        return False


def _check_download_reachable(name: str, host: str = "storage.googleapis.com", timeout: float = 5.0) -> None:
    """Fail in seconds, not after TFDS's minutes of retries, when a download cannot work.

    TFDS first looks for prepared datasets on GCS, so no route to it (and no proxy
    configured, which a direct probe would bypass) means this machine is offline.
    """
    import socket
    import urllib.request

    if urllib.request.getproxies().get("https"):
        return
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as err:
        raise DataError(f"TFDS dataset {name!r} is not prepared in the TFDS data dir and this machine cannot reach "
                        f"{host} to download it ({err.__class__.__name__}: {err}); use --tfds-data-dir with a "
                        "prepared copy, or --data-dir with one folder per class") from None


def _to_rgb_uint8(image, label):
    image = tf.cast(image, tf.uint8)
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    elif image.shape[-1] == 4:
        image = image[..., :3]
    return image, tf.cast(label, tf.int64)

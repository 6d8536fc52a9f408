"""The labelled image-folder layout, one definition for the training job and the client's
evaluation: ROOT/<class name>/<files>.

Classes are ROOT's non-hidden sub-folders, sorted (a class's index is its place in that
order, as in Keras' image_dataset_from_directory). Every non-hidden file below a class folder,
recursively and in sorted order, is one of its images; whether it decodes is for the reader
to find out. A local ROOT is listed with os; a URL (gs://, s3://, ram://) through
tf.io.gfile, imported only then, so the client can use this module without TensorFlow.
"""
from __future__ import annotations

import os

from model_api.versions import is_url, join


class FolderError(ValueError):
    """The folder is not in the layout; the message says what is wrong, in one line."""


def _filesystem(root: str):
    """(isdir, listdir, walk) for the root's kind of path."""
    if is_url(root):
        import tensorflow as tf

        return tf.io.gfile.isdir, tf.io.gfile.listdir, tf.io.gfile.walk
    return os.path.isdir, os.listdir, os.walk


def _visible(names) -> list[str]:
    return sorted(name.rstrip("/") for name in names if not name.startswith("."))


def read_image_folder(root: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names and (path, class index) for every image file, sorted by class then path."""
    isdir, listdir, walk = _filesystem(root)
    if not isdir(root):
        raise FolderError(f"not a directory: {root}")
    class_names = [name for name in _visible(listdir(root)) if isdir(join(root, name))]
    if len(class_names) < 2:
        raise FolderError(f"{root} needs one sub-folder of images per class and at least 2 classes; "
                          f"found {len(class_names)} ({', '.join(class_names) or 'none'})")
    files = []
    for label, name in enumerate(class_names):
        for directory, subfolders, names in walk(join(root, name)):
            subfolders[:] = _visible(subfolders)
            files.extend((join(directory, n), label) for n in _visible(names))
    empty = [name for label, name in enumerate(class_names) if not any(lab == label for _, lab in files)]
    if empty:
        raise FolderError(f"class folder(s) with no files in {root}: {', '.join(empty)}")
    return class_names, files

"""The labelled image-folder layout, one definition for the training job and the client's
evaluation: ROOT/<class name>/<files>.

Classes are ROOT's non-hidden sub-folders, sorted (a class's index is its place in that
order, as in Keras' image_dataset_from_directory). Every non-hidden file below a class folder,
recursively and in sorted order, is one of its images; whether it decodes is for the reader
to find out. Listed through tf.io.gfile, so ROOT may be local, gs://, s3:// or ram://.
"""
from __future__ import annotations

import os
import posixpath

import tensorflow as tf


class FolderError(ValueError):
    """The folder is not in the layout; the message says what is wrong, in one line."""


def join(*parts: str) -> str:
    return os.path.join(*parts) if "://" not in parts[0] else posixpath.join(*parts)


def _visible(names) -> list[str]:
    return sorted(name.rstrip("/") for name in names if not name.startswith("."))


def read_image_folder(root: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names and (path, class index) for every image file, sorted by class then path."""
    if not tf.io.gfile.isdir(root):
        raise FolderError(f"not a directory: {root}")
    class_names = [name for name in _visible(tf.io.gfile.listdir(root)) if tf.io.gfile.isdir(join(root, name))]
    if len(class_names) < 2:
        raise FolderError(f"{root} needs one sub-folder of images per class and at least 2 classes; "
                          f"found {len(class_names)} ({', '.join(class_names) or 'none'})")
    files = []
    for label, name in enumerate(class_names):
        for directory, subfolders, names in tf.io.gfile.walk(join(root, name)):
            subfolders[:] = _visible(subfolders)
            files.extend((join(directory, n), label) for n in _visible(names))
    empty = [name for label, name in enumerate(class_names) if not any(lab == label for _, lab in files)]
    if empty:
        raise FolderError(f"class folder(s) with no files in {root}: {', '.join(empty)}")
    return class_names, files

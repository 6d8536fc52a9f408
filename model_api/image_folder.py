"""The image-folder rules, one definition for the training job, `predict DIR` and `predict evaluate`:
which files a folder holds (walk_files) and the labelled layout ROOT/<class name>/<files>.

Walking: non-hidden names only, sorted, recursively, following symlinked folders (a class
folder or any folder below it may be a link; each real folder is walked once, so a link
back up cannot loop). Classes are ROOT's non-hidden sub-folders, sorted (a class's index is
its place in that order, as in Keras' image_dataset_from_directory); every file walk_files
finds below a class folder is one of its images, and whether it decodes is for the reader
to find out. A local ROOT is listed with os; a URL (gs://, s3://, ram://) through
tf.io.gfile, imported only then, so the client can use this module without TensorFlow.
"""
from __future__ import annotations

import os

from model_api.versions import is_url, join


class FolderError(ValueError):
    """The folder is not in the layout; the message says what is wrong, in one line."""


def _filesystem(root: str):
    """(isdir, listdir, walk) for the root's kind of path; walk follows symlinked folders."""
    if is_url(root):
        import tensorflow as tf

        return tf.io.gfile.isdir, tf.io.gfile.listdir, tf.io.gfile.walk  # object stores have no links
    return os.path.isdir, os.listdir, lambda top: os.walk(top, followlinks=True)


def _visible(names) -> list[str]:
    return sorted(name.rstrip("/") for name in names if not name.startswith("."))


def walk_files(directory: str) -> list[str]:
    """Every non-hidden file below `directory`, as `directory` joined with its path inside it,
    sorted folder by folder (a folder's files, then its sub-folders in name order)."""
    _, _, walk = _filesystem(directory)
    seen, found = set(), []
    for folder, subfolders, names in walk(directory):
        real = folder if is_url(folder) else os.path.realpath(folder)
        if real in seen:  # a symlink to a folder already walked (or to an ancestor): skip its loop
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = _visible(subfolders)
        found.extend(join(folder, name) for name in _visible(names))
    return found


def read_image_folder(root: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names and (path, class index) for every image file, sorted by class then path."""
    isdir, listdir, _ = _filesystem(root)
    if not isdir(root):
        raise FolderError(f"not a directory: {root}")
    class_names = [name for name in _visible(listdir(root)) if isdir(join(root, name))]
    if len(class_names) < 2:
        raise FolderError(f"{root} needs one sub-folder of images per class and at least 2 classes; "
                          f"found {len(class_names)} ({', '.join(class_names) or 'none'})")
    files = [(path, label) for label, name in enumerate(class_names) for path in walk_files(join(root, name))]
    empty = [name for label, name in enumerate(class_names) if not any(lab == label for _, lab in files)]
    if empty:
        raise FolderError(f"class folder(s) with no files in {root}: {', '.join(empty)}")
    return class_names, files

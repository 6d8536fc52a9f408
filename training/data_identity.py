"""What a test accuracy was measured on, identified by content rather than by location.

The regression gate compares a new version's test accuracy with the newest published
one's only when both were tested on the same data and split. A data folder is identified
by a fingerprint of its file list: each file's path relative to the folder (the class is
its first component), its size and the SHA-256 of its bytes, so the same photos mounted
at another path (or copied to a bucket) are recognised and a changed photo is not.
A TFDS dataset is identified by its name, config and version.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import tensorflow as tf

from training.config import TrainConfig

_CHUNK = 1 << 20


def identify(config: TrainConfig) -> dict:
    if config.data_dir:
        return folder_identity(config.data_dir)
    return tfds_identity(config.dataset, config.tfds_data_dir)


def _relative(path: str, root: str) -> str:
    root = root.rstrip("/")
    relative = path[len(root) + 1:] if path.startswith(root + "/") else os.path.relpath(path, root)
    return relative.replace(os.sep, "/")


def file_digest(path: str) -> tuple[str, int]:
    """(SHA-256 hex, size in bytes) of a file's content, read through tf.io.gfile."""
    digest = hashlib.sha256()
    size = 0
    with tf.io.gfile.GFile(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def folder_identity(data_dir: str) -> dict:
    """The fingerprint of every file training/data.py lists in `data_dir` (its own listing)."""
    from training.data import list_image_folder

    class_names, files = list_image_folder(data_dir)
    listing = sorted((_relative(path, data_dir), path) for path, _ in files)
    fingerprint = hashlib.sha256()
    total = 0
    with ThreadPoolExecutor(max_workers=8) as pool:  # reading dominates, and hashlib releases the GIL
        for (relative, _), (content, size) in zip(listing, pool.map(file_digest, [path for _, path in listing])):
            fingerprint.update(f"{relative}\t{size}\t{content}\n".encode())
            total += size
    return {"kind": "folder", "classes": class_names, "files": len(files), "bytes": total,
            "fingerprint": "sha256:" + fingerprint.hexdigest()}


def tfds_identity(dataset: str, tfds_data_dir: str | None = None) -> dict:
    import tensorflow_datasets as tfds

    info = tfds.builder(dataset, data_dir=tfds_data_dir).info
    return {"kind": "tfds", "name": info.name, "version": str(info.version),
            "fingerprint": f"tfds:{info.full_name}"}


def describe(identity: dict | None) -> str:
    if not identity:
        return "no data fingerprint"
    if identity.get("kind") == "folder":
        return f"folder of {identity.get('files')} files, {identity.get('fingerprint', '?')[:19]}…"
    return identity.get("fingerprint", "unknown data")

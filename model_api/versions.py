"""The model directory layout TF Serving polls: `<base>/<model_name>/<integer version>/`.

TF Serving treats a child directory as a version only when its whole name parses as an
int64 (file_system_storage_path_source.cc), and ignores everything else. Staging
directories therefore never have an integer name.

Paths go through tf.io.gfile, so local folders, gs://, s3:// (TF I/O plugins) and ram://
all work; on object stores a "directory" is a name prefix, as TF Serving's GetChildren sees it.
"""
from __future__ import annotations

import os
import posixpath
import re

_VERSION_NAME = re.compile(r"^[0-9]{1,18}$")
STAGING_PREFIX = ".staging-"


def is_version_name(name: str) -> bool:
    return bool(_VERSION_NAME.match(name))


def is_url(path: str | os.PathLike) -> bool:
    """gs://, s3://, ram://... rather than a path on a mounted filesystem."""
    return "://" in os.fspath(path)


def join(*parts: str | os.PathLike) -> str:
    """Path join that keeps URL schemes (gs://, ram://) intact, as tf.io.gfile.join does; pathlib
    would collapse '//'. Without TensorFlow, so the client can use it."""
    parts = [os.fspath(p) for p in parts]
    return posixpath.join(*parts) if is_url(parts[0]) else os.path.join(*parts)


def list_versions(model_dir: str | os.PathLike) -> list[int]:
    """Integer versions present under `model_dir`, ascending; [] if it does not exist."""
    import tensorflow as tf

    path = os.fspath(model_dir)
    if not tf.io.gfile.isdir(path):
        return []
    names = {name.rstrip("/") for name in tf.io.gfile.listdir(path)}
    return sorted(int(name) for name in names if is_version_name(name) and tf.io.gfile.isdir(join(path, name)))


def next_version(model_dir: str | os.PathLike) -> int:
    """The next integer after the highest present version (1 for an empty model directory)."""
    versions = list_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def version_dir(base_path: str | os.PathLike, model_name: str, version: int) -> str:
    return join(base_path, model_name, str(int(version)))

"""File operations for export and publish on any filesystem tf.io.gfile knows.

Local folders get what POSIX offers (fsync, an atomic no-replace rename). Other schemes
(gs://, s3:// with the TF I/O plugins, ram://) have neither: a directory is a name prefix
and "renaming" one copies object by object, so publishing there copies into place and
writes saved_model.pb last (see `copy_tree`).
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
from collections.abc import Callable

import tensorflow as tf

from model_api.versions import is_url

gfile = tf.io.gfile
SAVED_MODEL_FILE = "saved_model.pb"


def is_local(path: str) -> bool:
    """A plain path on a mounted filesystem (no URL scheme)."""
    return not is_url(path)


def write_text(path: str, text: str) -> None:
    """Create or replace a text file."""
    _write(path, text, "w")


def write_bytes(path: str, data: bytes) -> None:
    """Create or replace a binary file."""
    _write(path, data, "wb")


def _write(path: str, content, mode: str) -> None:
    gfile.makedirs(os.path.dirname(path))
    if path.startswith("ram://") and gfile.exists(path):
        gfile.remove(path)  # TF's RamFileSystem appends to an existing file instead of replacing it
    with gfile.GFile(path, mode) as f:
        f.write(content)


def write_json(path: str, value) -> None:
    write_text(path, json.dumps(value, indent=2))


def replace_json(path: str, value, default=None) -> None:
    """Write `value` as JSON beside `path`, then rename it over `path`: a reader finds the old
    file or the new one, never half of one. `default` as in json.dumps."""
    write_text(path + ".tmp", json.dumps(value, indent=2, default=default))
    gfile.rename(path + ".tmp", path, overwrite=True)


def read_json(path: str):
    with gfile.GFile(path, "r") as f:
        return json.loads(f.read())


def remove_tree(path: str) -> None:
    """gfile.rmtree, tolerating TF's RamFileSystem, which deletes everything and then reports
    NotFound for the phantom entries its prefix listing invents (see copy_tree)."""
    try:
        gfile.rmtree(path)
    except tf.errors.NotFoundError:
        left = [name for current, _, names in gfile.walk(path) for name in names
                if gfile.exists(gfile.join(current, name))]
        if left:
            raise


def fsync_tree(root: str) -> None:
    """Flush every file and directory under a local `root` to disk (no-op elsewhere: an
    object store's write is durable once its GFile is closed)."""
    if not is_local(root):
        return
    for current, dirs, files in os.walk(root, topdown=False):
        for name in files:
            with open(os.path.join(current, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(current)


def fsync_dir(path: str) -> None:
    if not is_local(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_NOREPLACE = 1  # linux/fs.h
_AT_FDCWD = -100


def _renameat2():
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or glibc < 2.28
        return None


def rename_no_replace(source: str, target: str) -> None:
    """Atomically rename local `source` to `target`, failing with FileExistsError if `target`
    exists. Plain rename(2) would silently replace an empty directory created meanwhile;
    renameat2(RENAME_NOREPLACE) cannot. Falls back to check-then-rename (callers hold the
    publish lock) where the kernel or filesystem lacks it."""
    function = _renameat2()
    if function is not None:
        result = function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE)
        if result == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), target)
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), source)
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target)
    os.rename(source, target)


def copy_tree(source: str, target: str, before_each: Callable[[], None] | None = None) -> None:
    """Copy `source` into a new `target`, never overwriting a file, saved_model.pb last;
    `before_each()` runs before each file and may raise to stop the copy (a lost lease).

    TF Serving treats any integer-named prefix as a version the moment one object exists
    under it (file_system_storage_path_source.cc: GetChildren on GCS lists descendants), and
    its loader cannot start before saved_model.pb exists (loader.cc: "Could not find
    SavedModel .pb or .pbtxt"), retrying with --max_num_load_retries/--load_retry_interval_micros.
    Writing saved_model.pb last therefore makes it the completion marker: whoever can read it
    finds every variable, asset and warmup record already in place.
    """
    files = []
    for current, _, names in gfile.walk(source):
        relative = current[len(source):].strip("/")
        # TF's RamFileSystem lists by bare prefix: "assets" shows a phantom ".extra" of "assets.extra".
        files.extend(f"{relative}/{name}" if relative else name for name in names
                     if gfile.exists(gfile.join(current, name)))
    files.sort(key=lambda name: name == SAVED_MODEL_FILE)  # stable: saved_model.pb moves to the end
    for name in files:
        if before_each:
            before_each()
        destination = gfile.join(target, name)
        gfile.makedirs(os.path.dirname(destination))
        gfile.copy(gfile.join(source, name), destination, overwrite=False)

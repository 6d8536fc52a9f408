"""The model directory layout TF Serving polls: `<base>/<model_name>/<integer version>/`.

TF Serving treats a child as a version when its whole name parses as an int64, keeps the
child's own name as the version's path ("00001/" stays "00001/"), and ignores everything else
(file_system_storage_path_source.cc). Staging directories therefore never have an integer name.

Paths go through tf.io.gfile, so local folders, gs://, s3:// (TF I/O plugins) and ram://
all work; on object stores a "directory" is a name prefix, as TF Serving's GetChildren sees it.
"""
from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field

_DIGITS = re.compile(r"^[0-9]+$")
_INT64_MAX = 2**63 - 1
STAGING_PREFIX = ".staging-"


class ListingError(Exception):
    """A model directory could not be listed (missing, unreadable, storage unavailable): nothing
    can be concluded about its versions, so a poll must change nothing."""

    def __init__(self, path: str, reason: str, missing: bool = False):
        super().__init__(f"cannot list {path}: {reason}")
        self.path = path
        self.reason = reason
        self.missing = missing  # the path does not exist (as opposed to: exists, unreadable)


@dataclass
class VersionListing:
    """What one listing found: version -> child name, and the duplicate names it ignored."""
    children: dict = field(default_factory=dict)   # int version -> child name ("00001")
    ignored: dict = field(default_factory=dict)    # ignored child name -> child name used instead

    def versions(self) -> list[int]:
        return sorted(self.children)


def version_number(name: str) -> int | None:
    """The version a child name stands for, or None. Digits only, within int64 (TF Serving's
    ParseVersionNumber also takes a sign or surrounding spaces: see docs, a deliberate difference)."""
    if not _DIGITS.match(name):
        return None
    number = int(name)
    return number if number <= _INT64_MAX else None


def is_version_name(name: str) -> bool:
    return version_number(name) is not None


def is_url(path: str | os.PathLike) -> bool:
    """gs://, s3://, ram://... rather than a path on a mounted filesystem."""
    return "://" in os.fspath(path)


def join(*parts: str | os.PathLike) -> str:
    """Path join that keeps URL schemes (gs://, ram://) intact, as tf.io.gfile.join does; pathlib
    would collapse '//'. Without TensorFlow, so the client can use it."""
    parts = [os.fspath(p) for p in parts]
    return posixpath.join(*parts) if is_url(parts[0]) else os.path.join(*parts)


def index_children(names) -> VersionListing:
    """IndexChildrenByVersion: children whose names parse as versions, by version. When two
    names give one version ("1" and "001"), the one last in byte order wins, as in TF Serving,
    which walks the children as a sorted std::set and overwrites."""
    listing = VersionListing()
    for name in sorted(set(names)):
        version = version_number(name)
        if version is None:
            continue
        if version in listing.children:
            listing.ignored[listing.children[version]] = name
        listing.children[version] = name
    return listing


def _direct_children(raw_names) -> set[str]:
    """Object stores may return descendants ("1/saved_model.pb") or a trailing '/': keep the
    first component, as PollFileSystemForServable does."""
    return {name.strip("/").split("/", 1)[0] for name in raw_names if name.strip("/")}


def scan_versions(model_dir: str | os.PathLike) -> VersionListing:
    """The versions under `model_dir` and the child each lives in; ListingError when it cannot
    be listed. Like PollFileSystemForServable, the base path must exist (FileExists) before its
    children are read, so a missing or briefly unavailable path never reads as "no versions";
    only a readable, empty directory does. tf.io.gfile.isdir is not used: it turns every error
    into False."""
    import tensorflow as tf

    path = os.fspath(model_dir)
    try:
        exists = tf.io.gfile.exists(path)  # False only for NOT_FOUND; other errors raise
    except tf.errors.OpError as err:
        raise ListingError(path, f"{type(err).__name__}: {err.message}") from err
    if not exists:
        raise ListingError(path, "no such directory", missing=True)
    try:
        names = tf.io.gfile.listdir(path)
    except tf.errors.OpError as err:
        raise ListingError(path, f"{type(err).__name__}: {err.message}") from err
    return index_children(_direct_children(names))


def list_versions(model_dir: str | os.PathLike) -> list[int]:
    """Integer versions present under `model_dir`, ascending; [] if it does not exist.
    ListingError when it exists but cannot be listed (never a silent [])."""
    try:
        return scan_versions(model_dir).versions()
    except ListingError as err:
        if err.missing:
            return []
        raise


def version_paths(model_dir: str | os.PathLike) -> dict[int, str]:
    """version -> its real path ("<model_dir>/00001"), for code that opens or removes versions;
    {} if `model_dir` does not exist."""
    try:
        children = scan_versions(model_dir).children
    except ListingError as err:
        if err.missing:
            return {}
        raise
    return {version: join(os.fspath(model_dir), name) for version, name in children.items()}


def next_version(model_dir: str | os.PathLike) -> int:
    """The next integer after the highest present version (1 for an empty model directory)."""
    versions = list_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def version_dir(base_path: str | os.PathLike, model_name: str, version: int) -> str:
    """Where a NEW version is published: its plain decimal name."""
    return join(base_path, model_name, str(int(version)))

"""Publish a version under `<base>/<name>/<n>/` only after it proves itself, completely.

TF Serving polls the model directory and loads any integer-named child it finds
(file_system_storage_path_source.cc), so a half-written export (tensorflow/serving#631,
#1086) or a worse model must never appear there. Each publish:

1. takes the model directory's exclusive publish lock (training/locking.py), so two
   exporters of the same model publish one after the other, with distinct versions;
2. removes staging folders whose owner is gone (never a live exporter's);
3. picks the version, runs the accuracy gate, writes into `.staging-<pid>-<token>@<host>`
   (a name TF Serving ignores), flushes it, runs the servable gate (training/gate.py);
4. puts it in place: on a local filesystem an atomic rename that refuses to replace a
   version created meanwhile; on object stores and ram:// (no directory rename) a copy
   that never overwrites and writes saved_model.pb last (training/storage.py).

Locally a crash at any moment leaves no new version or a complete one. On object stores a
crash mid-copy (or mid-prune) leaves `<n>/` without saved_model.pb, which TF Serving fails to
load; the copy is announced by a marker `.staging-<owner>-placing-<n>@<host>` (`removing-<n>`
for a prune), so the next publish, under the lock, finds the marker abandoned and removes
that `<n>/` (step 2). Every path goes through tf.io.gfile, so the base path may be local,
gs://, s3:// (TF I/O plugins) or ram://.
"""
from __future__ import annotations

import os
from typing import Callable

import tensorflow as tf

from model_api.versions import join, list_versions, next_version, version_dir
from training import locking, storage
from training.gate import Gate, GateFailed, check_accuracy, check_servable
from training.progress import say

__all__ = ["Gate", "GateFailed", "PublishError", "publish", "prune", "protected_versions"]
gfile = tf.io.gfile


class PublishError(RuntimeError):
    """The version cannot be published (it exists already, the base path is unusable)."""


# Object-store operations that leave `<n>/` without saved_model.pb while they run; each is
# announced by a staging-named marker, removed when the operation has ended.
INCOMPLETE_WHILE = ("placing", "removing")


def _marker(model_dir: str, owner: locking.Owner, purpose: str, version: int) -> str:
    marker = join(model_dir, owner.staging_name(f"{purpose}-{version}"))
    storage.write_text(marker, "")
    return marker


def _remove(path: str) -> None:
    """A staging folder or a marker file."""
    if gfile.isdir(path):
        storage.remove_tree(path)
    else:
        gfile.remove(path)


def _remove_incomplete_version(model_dir: str, marker_name: str) -> None:
    """An abandoned marker's `<n>/`, if it still lacks saved_model.pb: its writer is gone and we
    hold the lock, so nobody will complete it, and TF Serving cannot load it."""
    purpose, _, number = locking.purpose_of(marker_name).rpartition("-")
    if purpose not in INCOMPLETE_WHILE or not number.isdigit():
        return
    path = join(model_dir, number)
    if gfile.exists(path) and not gfile.exists(join(path, storage.SAVED_MODEL_FILE)):
        storage.remove_tree(path)
        say(f"[export] removed version {number}, left without {storage.SAVED_MODEL_FILE} by an export that "
            f"stopped while {purpose} it")


def remove_abandoned_staging(model_dir: str, me: locking.Owner) -> list[str]:
    """Staging folders (and markers) left by exporters that are gone, with the incomplete
    versions their markers name; called with the publish lock held."""
    removed, kept = [], []
    for name in sorted(n.rstrip("/") for n in gfile.listdir(model_dir)):
        if not name.startswith(locking.STAGING_PREFIX):
            continue
        if locking.is_abandoned(name, me):
            _remove_incomplete_version(model_dir, name)
            _remove(join(model_dir, name))
            removed.append(name)
        else:
            kept.append(name)
    if removed:
        say(f"[export] removed abandoned staging folders: {', '.join(removed)}")
    if kept:
        say(f"[export] left staging folders of running exporters alone: {', '.join(kept)}")
    return removed


def publish(base_path: str, model_name: str, write: Callable[[str, int], None], gate: Gate,
            version: int | None = None, keep: int = 0, serving_config: str | None = None,
            lock_timeout: float = locking.DEFAULT_TIMEOUT_SECONDS) -> dict:
    """Stage with `write(directory, version)`, run the gate, put into place; prune with keep."""
    protected = protected_versions(serving_config, model_name)  # a bad file fails here, before a version exists
    model_dir = join(base_path, model_name)
    try:
        gfile.makedirs(model_dir)
    except tf.errors.OpError as err:
        raise PublishError(f"cannot create the model directory {model_dir}: {err.message}") from None
    owner = locking.Owner.new()
    try:
        with locking.publish_lock(model_dir, owner, timeout=lock_timeout, say=say):
            return _publish_locked(model_dir, base_path, model_name, write, gate, version, keep, protected, owner)
    except locking.LockError as err:  # a timeout, or a lock the filesystem cannot give
        raise PublishError(str(err)) from None


def _publish_locked(model_dir, base_path, model_name, write, gate, version, keep, protected, owner) -> dict:
    # Counted before an abandoned incomplete version is removed, so its number is never reused
    # (TF Serving may still hold that version's failed load).
    version = int(version) if version else next_version(model_dir)
    remove_abandoned_staging(model_dir, owner)
    final = version_dir(base_path, model_name, version)
    if gfile.exists(final):
        raise PublishError(f"version {version} already exists at {final}; versions are never overwritten")
    accuracy_report = check_accuracy(gate, model_dir)
    staging = join(model_dir, owner.staging_name())
    try:
        say(f"[export] writing {model_name} version {version} into {staging}")
        write(staging, version)
        storage.fsync_tree(staging)
        servable_report = check_servable(staging, gate)
        put_in_place(staging, final, version, owner)
    finally:
        if gfile.exists(staging):
            storage.remove_tree(staging)
    say(f"[export] published {final}")
    removed = prune(model_dir, keep, protected, owner) if keep else []
    return {"version": version, "path": final, "gate": {**accuracy_report, **servable_report},
            "removed_versions": removed}


def put_in_place(staging: str, final: str, version: int, owner: locking.Owner) -> None:
    appeared = f"version {version} appeared at {final} while exporting; not overwritten"
    if storage.is_local(final):
        try:
            storage.rename_no_replace(staging, final)
        except FileExistsError:
            raise PublishError(appeared) from None
        storage.fsync_dir(os.path.dirname(final))
        return
    if gfile.exists(final):
        raise PublishError(appeared)
    marker = _marker(os.path.dirname(final), owner, "placing", version)  # if we die mid-copy, the next export cleans up
    try:
        storage.copy_tree(staging, final)
    except tf.errors.AlreadyExistsError:
        gfile.remove(marker)  # someone else writes there: never ours to remove
        raise PublishError(appeared) from None
    except BaseException:  # KeyboardInterrupt and SystemExit too: no half-copied version may stay
        if gfile.exists(final):
            storage.remove_tree(final)  # ours alone (checked absent under the lock) and without saved_model.pb
        gfile.remove(marker)
        raise
    gfile.remove(marker)


def protected_versions(serving_config: str | None, model_name: str) -> set[int]:
    """Versions a TF Serving models.config points a label at (they must never be pruned).

    Read before anything is published: a missing or malformed file is a PublishError."""
    if not serving_config:
        return set()
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    try:
        with gfile.GFile(serving_config, "r") as f:
            config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    except tf.errors.OpError as err:
        raise PublishError(f"cannot read --serving-config {serving_config}: {err.message}") from None
    except text_format.ParseError as err:
        raise PublishError(f"--serving-config {serving_config} is not a TF Serving models.config: {err}") from None
    protected = set()
    for model in config.model_config_list.config:
        if model.name == model_name:
            protected.update(int(v) for v in model.version_labels.values())
            protected.update(int(v) for v in model.model_version_policy.specific.versions)
    return protected


def prune(model_dir: str, keep: int, protected: set[int], owner: locking.Owner | None = None) -> list[int]:
    """Remove all but the newest `keep` versions, never a protected one.

    Locally each is renamed away first (TF Serving then unloads it whole) and deleted after;
    elsewhere saved_model.pb goes first, so the version can no longer start loading."""
    versions = list_versions(model_dir)
    doomed = [v for v in versions[:-keep] if v not in protected] if keep > 0 else []
    owner = owner or locking.Owner.new()
    for v in doomed:
        path, marker = join(model_dir, str(v)), None
        if storage.is_local(model_dir):
            trash = join(model_dir, owner.staging_name(f"deleting-{v}"))
            gfile.rename(path, trash)
            path = trash
        else:
            marker = _marker(model_dir, owner, "removing", v)  # if we die mid-removal, the next export finishes it
            saved_model = join(path, storage.SAVED_MODEL_FILE)
            if gfile.exists(saved_model):
                gfile.remove(saved_model)
        storage.remove_tree(path)
        if marker:
            gfile.remove(marker)
    if doomed:
        say(f"[export] removed old versions {doomed} (--keep {keep})")
    return doomed

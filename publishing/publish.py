"""Publish a version under `<base>/<name>/<n>/` only after it proves itself, completely: staged and
locked in `<base>/.<name>.publish/`, placed without replacing anything, old versions pruned (docs/export.md)."""
from __future__ import annotations

import os
from collections.abc import Callable

import tensorflow as tf

from model_api.versions import join, next_version, version_dir, version_paths
from publishing import locking, storage
from publishing.gate import Gate, GateFailed, check_accuracy, check_servable, say

__all__ = ["Gate", "GateFailed", "PublishError", "protected_versions", "prune", "publish"]
gfile = tf.io.gfile


class PublishError(RuntimeError):
    """The version cannot be published (it exists already, the base path is unusable)."""


# Object-store operations that leave `<n>/` without saved_model.pb while they run; each is
# announced by a staging-named marker, removed when the operation has ended.
INCOMPLETE_WHILE = ("placing", "removing")


def _marker(area: str, owner: locking.Owner, purpose: str, version: int) -> str:
    marker = join(area, owner.staging_name(f"{purpose}-{version}"))
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
    versions their markers name; called with the publish lock held. Looks in the publish area
    and, for what exports before it left there, in the model directory."""
    removed, kept = [], []
    for folder in (locking.publish_area(model_dir), model_dir):
        for name in _staging_names(folder):
            if locking.is_abandoned(name, me):
                _remove_incomplete_version(model_dir, name)
                _remove(join(folder, name))
                removed.append(name)
            else:
                kept.append(name)
    if removed:
        say(f"[export] removed abandoned staging folders: {', '.join(removed)}")
    if kept:
        say(f"[export] left staging folders of running exporters alone: {', '.join(kept)}")
    return removed


def _staging_names(folder: str) -> list[str]:
    if not gfile.exists(folder):
        return []
    return sorted(n.rstrip("/") for n in gfile.listdir(folder) if n.startswith(locking.STAGING_PREFIX))


def _same_filesystem(model_dir: str, area: str) -> None:
    """Staging beside `<model>/` is renamed into it: that is atomic only within one filesystem."""
    if storage.is_local(model_dir) and os.stat(model_dir).st_dev != os.stat(area).st_dev:
        raise PublishError(f"{model_dir} is a mount point of its own, so a version staged in {area} cannot be "
                           f"renamed into it atomically; mount {os.path.dirname(model_dir.rstrip('/'))} instead")


def publish(base_path: str, model_name: str, write: Callable[[str, int], None], gate: Gate,
            version: int | None = None, keep: int = 0, serving_config: str | None = None,
            lock_timeout: float = locking.DEFAULT_TIMEOUT_SECONDS) -> dict:
    """Stage with `write(directory, version)`, run the gate, put into place; prune with keep.

    TF Serving loads any integer-named child of the model directory it finds
    (file_system_storage_path_source.cc), so only complete, validated versions may appear there."""
    protected = protected_versions(serving_config, model_name)  # a bad file fails here, before a version exists
    model_dir = join(base_path, model_name)
    area = locking.publish_area(model_dir)
    for folder in (model_dir, area):
        try:
            gfile.makedirs(folder)
        except tf.errors.OpError as err:
            raise PublishError(f"cannot create {folder}: {err.message}") from None
    _same_filesystem(model_dir, area)
    owner = locking.Owner.new()
    try:
        with locking.publish_lock(model_dir, owner, timeout=lock_timeout, say=say) as held:
            return _publish_locked(model_dir, base_path, model_name, write, gate, version, keep, protected,
                                   owner, held)
    except locking.LockError as err:  # a timeout, a lock the filesystem cannot give, a lease lost before placing
        raise PublishError(f"{err}; nothing was published") from None


def _publish_locked(model_dir, base_path, model_name, write, gate, version, keep, protected, owner, held) -> dict:
    """With the lock held: clean up after exporters that are gone, pick the version, accuracy gate,
    write into staging, flush, servable gate (publishing/gate.py), confirm the lock, place, prune."""
    # Counted before an abandoned incomplete version is removed, so its number is never reused
    # (TF Serving may still hold that version's failed load).
    version = int(version) if version else next_version(model_dir)
    remove_abandoned_staging(model_dir, owner)
    final = version_dir(base_path, model_name, version)
    if gfile.exists(final):
        raise PublishError(f"version {version} already exists at {final}; versions are never overwritten")
    accuracy_report = check_accuracy(gate, model_dir)
    staging = join(locking.publish_area(model_dir), owner.staging_name())
    try:
        say(f"[export] writing {model_name} version {version} into {staging}")
        write(staging, version)
        storage.fsync_tree(staging)
        servable_report = check_servable(staging, gate)
        if held:  # a lease lost while we wrote: another exporter may be placing this number now
            held.check()
        put_in_place(staging, final, version, owner, held)
    finally:
        if gfile.exists(staging):
            storage.remove_tree(staging)
    say(f"[export] published {final}")
    removed = prune(model_dir, keep, protected, owner, held) if keep else []
    return {"version": version, "path": final, "gate": {**accuracy_report, **servable_report},
            "removed_versions": removed}


def put_in_place(staging: str, final: str, version: int, owner: locking.Owner,
                 held: locking.Lease | None = None) -> None:
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
    area = locking.publish_area(os.path.dirname(final))
    marker = _marker(area, owner, "placing", version)  # if we die mid-copy, the next export cleans up
    try:
        storage.copy_tree(staging, final, before_each=held.check if held else None)
    except tf.errors.AlreadyExistsError:
        gfile.remove(marker)  # someone else writes there: never ours to remove
        raise PublishError(appeared) from None
    except BaseException:  # a lost lease, KeyboardInterrupt, SystemExit: no half-copied version may stay
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


def prune(model_dir: str, keep: int, protected: set[int], owner: locking.Owner | None = None,
          held: locking.Lease | None = None) -> list[int]:
    """Remove all but the newest `keep` versions, never a protected one; stop if `held` is lost.

    Locally each is renamed away into the publish area first (TF Serving then unloads it whole)
    and deleted after; elsewhere saved_model.pb goes first, so the version can no longer start loading."""
    paths = version_paths(model_dir)  # a version's real folder: "00001/" is version 1
    versions = sorted(paths)
    doomed = [v for v in versions[:-keep] if v not in protected] if keep > 0 else []
    owner = owner or locking.Owner.new()
    area = locking.publish_area(model_dir)
    removed = []
    for v in doomed:
        try:
            if held:
                held.check()
        except locking.LockLost as err:
            say(f"[export] stopped removing old versions (--keep {keep}): {err}")
            break
        _remove_version(model_dir, paths[v], area, owner, v)
        removed.append(v)
    if removed:
        say(f"[export] removed old versions {removed} (--keep {keep})")
    return removed


def _remove_version(model_dir: str, path: str, area: str, owner: locking.Owner, v: int) -> None:
    marker = None
    if storage.is_local(model_dir):
        trash = join(area, owner.staging_name(f"deleting-{v}"))
        gfile.makedirs(area)
        gfile.rename(path, trash)
        path = trash
    else:
        marker = _marker(area, owner, "removing", v)  # if we die mid-removal, the next export finishes it
        saved_model = join(path, storage.SAVED_MODEL_FILE)
        if gfile.exists(saved_model):
            gfile.remove(saved_model)
    storage.remove_tree(path)
    if marker:
        gfile.remove(marker)

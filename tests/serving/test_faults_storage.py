"""Storage faults under a served model: a base path that cannot be listed changes nothing, a
readable empty one unloads, and version folders keep their own names ("00001/")."""
import logging
import os
import shutil

import pytest
import tensorflow as tf
from tensorflow.python.lib.io import file_io

from model_api.versions import ListingError, index_children, list_versions, scan_versions
from serving.errors import ServingError
from serving.registry import ModelRegistry, State
from tests.serving.test_registry import config, copy_version, spec, start_in_background


@pytest.fixture
def pets_base(model_base, tmp_path):
    """<tmp>/models/pets/1: a private copy of the tiny model, free to break."""
    base = tmp_path / "models"
    shutil.copytree(model_base / "pets" / "1", base / "pets" / "1")
    return base


def fail_filesystem_under(monkeypatch, root, error):
    """Make TensorFlow's file system layer fail for every path under `root`, as an unreadable
    mount, an expired credential or a storage outage does. chmod 000 cannot do it: the tests
    run as root, which reads anyway. So the C++ file system calls tf.io.gfile makes are
    replaced (not gfile itself), and gfile's own error handling (isdir turning errors into
    False, exists raising) behaves as it would against a failing store."""
    pywrap = file_io._pywrap_file_io
    root = str(root)

    def failing(real):
        def call(path, *args):
            text = path.decode() if isinstance(path, bytes) else str(path)
            if text == root or text.startswith(root + "/"):
                raise error(None, None, f"{text}: storage refused the call")
            return real(path, *args)
        return call

    for name in ("FileExists", "IsDirectory", "GetChildren", "Stat"):
        monkeypatch.setattr(pywrap, name, failing(getattr(pywrap, name)))


def spy_load_paths(monkeypatch) -> list:
    """(version, path) of each Servable.load call."""
    from serving.servable import Servable

    calls, real_load = [], Servable.load

    def load(name, version, path, scheduler=None):
        calls.append((version, path))
        return real_load(name, version, path, scheduler)

    monkeypatch.setattr(Servable, "load", staticmethod(load))
    return calls


@pytest.mark.parametrize("error", [tf.errors.PermissionDeniedError, tf.errors.UnavailableError])
def test_unreadable_base_path_keeps_serving_and_recovers(pets_base, monkeypatch, caplog, error):
    registry = ModelRegistry([config(f'name: "pets" base_path: "{pets_base}/pets"')], poll_seconds=0)
    registry.start()
    with monkeypatch.context() as outage:
        fail_filesystem_under(outage, pets_base / "pets", error)
        with caplog.at_level(logging.WARNING, logger="serving"):
            for _ in range(3):
                registry.poll_once()
        assert registry.resolve(spec()).version == 1
        assert dict(registry.statuses(spec()))[1].state == State.AVAILABLE
        warnings = [r for r in caplog.records if "keep serving until it can be listed" in r.getMessage()]
        assert len(warnings) == 1, "one warning per failure streak, not one per poll"
        assert error.__name__ in warnings[0].getMessage()
        copy_version(pets_base, 1, 2)  # published during the outage: seen once it is readable
    registry.poll_once()
    assert registry.resolve(spec()).version == 2
    assert dict(registry.statuses(spec()))[1].state == State.END
    registry.stop()


def test_missing_base_path_while_serving_keeps_serving(pets_base):
    """FileExists(base_path) fails in PollFileSystemForServable: the poll is aborted, nothing unloads."""
    registry = ModelRegistry([config(f'name: "pets" base_path: "{pets_base}/pets"')], poll_seconds=0)
    registry.start()
    os.rename(pets_base / "pets", pets_base / "pets-moved-away")
    registry.poll_once()
    assert registry.resolve(spec()).version == 1
    os.rename(pets_base / "pets-moved-away", pets_base / "pets")
    registry.stop()


def test_readable_empty_base_path_unloads_every_version(pets_base):
    registry = ModelRegistry([config(f'name: "pets" base_path: "{pets_base}/pets"')], poll_seconds=0)
    registry.start()
    os.rename(pets_base / "pets" / "1", pets_base / "pets" / ".removed-1")  # no integer child left
    registry.poll_once()
    with pytest.raises(ServingError) as info:
        registry.resolve(spec())
    assert (info.value.code.name, info.value.message) == ("NOT_FOUND", "Servable not found for request: Latest(pets)")
    assert dict(registry.statuses(spec()))[1].state == State.END
    registry.stop()


def test_a_base_path_missing_at_start_is_waited_for(pets_base):
    """TF Serving logs the failed poll and keeps waiting for the model (WaitUntilModelsAvailable)."""
    os.rename(pets_base / "pets", pets_base / "later")
    registry = ModelRegistry([config(f'name: "pets" base_path: "{pets_base}/pets"')], poll_seconds=0.1)
    thread, failures = start_in_background(registry)
    thread.join(0.5)
    assert thread.is_alive(), "start() waits for a base path that does not exist yet"
    os.rename(pets_base / "later", pets_base / "pets")
    thread.join(120)
    assert not thread.is_alive() and failures == []
    assert registry.resolve(spec()).version == 1
    registry.stop()


def test_zero_padded_version_folder_loads_from_its_own_path(pets_base, monkeypatch):
    os.rename(pets_base / "pets" / "1", pets_base / "pets" / "00001")
    loads = spy_load_paths(monkeypatch)
    registry = ModelRegistry([config(f'name: "pets" base_path: "{pets_base}/pets"')], poll_seconds=0)
    registry.start()
    assert loads == [(1, f"{pets_base}/pets/00001")]
    assert registry.resolve(spec(version=1)).version == 1
    registry.stop()


def test_two_folders_for_one_version_load_the_one_last_in_byte_order(pets_base, monkeypatch, caplog):
    """IndexChildrenByVersion walks the sorted names and keeps the last: "001" < "1"."""
    shutil.copytree(pets_base / "pets" / "1", pets_base / "pets" / "001")
    loads = spy_load_paths(monkeypatch)
    registry = ModelRegistry([config(f'name: "pets" base_path: "{pets_base}/pets"')], poll_seconds=0)
    with caplog.at_level(logging.WARNING, logger="serving"):
        registry.start()
        registry.poll_once()
    assert loads == [(1, f"{pets_base}/pets/1")]
    duplicate = [r.getMessage() for r in caplog.records if "Duplicate version directories" in r.getMessage()]
    assert duplicate == ["Duplicate version directories detected. Version 1 will be loaded from 1, 001 will be "
                         "ignored."], "logged once, not at every poll"
    registry.stop()


def test_index_children_keeps_real_names_and_ignores_non_versions():
    listing = index_children(["00007", "3", ".staging-1", "12a", "9223372036854775808", "0003"])
    assert listing.children == {3: "3", 7: "00007"}
    assert listing.ignored == {"0003": "3"}
    assert listing.versions() == [3, 7]


def test_listing_tells_cannot_list_from_empty_and_missing(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    assert scan_versions(tmp_path / "empty").children == {}
    assert list_versions(tmp_path / "absent") == [], "publishing into a new model directory starts at 1"
    with pytest.raises(ListingError) as missing:
        scan_versions(tmp_path / "absent")
    assert missing.value.missing
    (tmp_path / "m" / "1").mkdir(parents=True)
    fail_filesystem_under(monkeypatch, tmp_path / "m", tf.errors.PermissionDeniedError)
    for listing in (scan_versions, list_versions):
        with pytest.raises(ListingError, match="PermissionDeniedError") as unreadable:
            listing(tmp_path / "m")
        assert not unreadable.value.missing

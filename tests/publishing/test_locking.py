"""The publish area beside the model directory and its lock: the kernel record lock locally, the lease on
object stores (waiting, expiry, renewal retried, loss stops placing and pruning), one-line lock failures."""
import errno
import json
import os
import threading

import pytest
import tensorflow as tf

from model_api.versions import list_versions
from publishing import locking, publish, storage
from tests.publishing.conftest import IDENTITY, area_entries, assert_complete, entries, fake_servable, publish_fake


def test_the_lease_lock_makes_a_second_owner_wait_and_takes_over_an_expired_lease(ram_base, monkeypatch):
    monkeypatch.setattr(locking, "SETTLE_SECONDS", 0.05)
    path = f"{ram_base}/lease"
    first, second = locking.Owner.new(), locking.Owner.new()
    order, messages = [], []
    import time

    def take(owner, hold):
        with locking._lease_lock(path, owner, time.monotonic() + 30, messages.append):
            order.append(owner.token)
            time.sleep(hold)

    holder = threading.Thread(target=take, args=(first, 0.5))
    holder.start()
    time.sleep(0.2)
    take(second, 0)
    holder.join()
    assert order == [first.token, second.token]
    assert any("waiting for the publish lease" in m for m in messages)
    assert not tf.io.gfile.exists(path), "released leases are removed"
    storage.write_text(path, json.dumps({"host": "gone", "pid": 1, "token": "dead", "expires": time.time() - 1}))
    take(second, 0)  # an expired lease (its owner died) does not block forever
    assert order[-1] == second.token


def test_an_export_that_cannot_get_the_lock_in_time_publishes_nothing(tmp_path, no_servable_check):
    held, release = threading.Event(), threading.Event()

    def holder():
        with locking.publish_lock(str(tmp_path / "m"), locking.Owner.new(), say=lambda message: None):
            held.set()
            release.wait(30)

    (tmp_path / "m").mkdir()
    thread = threading.Thread(target=holder)
    thread.start()
    try:
        held.wait(10)
        gate = publish.Gate(test_accuracy=0.9, data_identity=IDENTITY, split={"s": 1})
        with pytest.raises(publish.PublishError, match="publish lock"):
            publish.publish(str(tmp_path), "m", fake_servable("late"), gate, lock_timeout=0.3)
    finally:
        release.set()
        thread.join()
    assert entries(tmp_path / "m") == []


@pytest.mark.parametrize("code, reason", [(errno.ENOLCK, r"No locks available \(ENOLCK\); on NFS the server's lock"),
                                          (errno.EBADF, r"Bad file descriptor \(EBADF\)")], ids=["ENOLCK", "EBADF"])
def test_a_lock_the_filesystem_cannot_give_is_one_line_not_an_hours_wait(tmp_path, no_servable_check, monkeypatch,
                                                                         code, reason):
    """Only EAGAIN/EACCES mean another exporter holds the lock; anything else would never pass."""
    import fcntl
    import time

    def refuse(fd, operation, *args):
        if operation & fcntl.LOCK_EX:
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "lockf", refuse)
    gate = publish.Gate(test_accuracy=0.9, data_identity=IDENTITY, split={"s": 1})
    started = time.monotonic()
    with pytest.raises(publish.PublishError, match=f"^cannot lock the publish lock .*{reason}") as raised:
        publish.publish(str(tmp_path), "m", fake_servable("t"), gate, lock_timeout=3)  # not a wait that times out
    assert time.monotonic() - started < 2 and "\n" not in str(raised.value)
    assert list_versions(tmp_path / "m") == []


def test_a_lock_file_this_user_cannot_open_is_one_line(tmp_path, no_servable_check, monkeypatch):
    original = os.open

    def open_as_another_user(path, flags, *args):
        if str(path).endswith(os.sep + locking.LOCK_FILE):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return original(path, flags, *args)

    monkeypatch.setattr(os, "open", open_as_another_user)
    refused = r"^cannot open the publish lock .*/\.m\.publish/lock: Permission denied; nothing was published$"
    with pytest.raises(publish.PublishError, match=refused):
        publish_fake(tmp_path)
    assert list_versions(tmp_path / "m") == []


# --- where the lock and staging live; the lease that cannot be lost silently -------------------

@pytest.mark.parametrize("where", ["local", "ram"])
def test_only_integer_versions_ever_appear_in_the_model_directory(where, tmp_path, ram_base, no_servable_check,
                                                                  monkeypatch):
    """A copier of `<base>/<model>/` (KServe's storage initializer, gsutil rsync) must not carry the
    lock or a staging folder to every replica: they live in `<base>/.<model>.publish/`."""
    from model_api.versions import is_version_name

    base = str(tmp_path) if where == "local" else ram_base
    model_dir = f"{base}/m"
    seen, staged_in = [], []

    def look(*args, **kwargs):
        seen.append(entries(model_dir))

    def spied(function):
        def call(*args, **kwargs):
            look()
            return function(*args, **kwargs)
        return call

    def write(directory, version):
        staged_in.append(directory)
        look()
        fake_servable("t")(directory, version)
        look()

    monkeypatch.setattr(storage, "remove_tree", spied(storage.remove_tree))  # while pruning, cleaning staging
    monkeypatch.setattr(storage.gfile, "copy", spied(storage.gfile.copy))  # while copying into place (ram://)
    for _ in range(3):
        publish_fake(base, write=write, keep=1)
    assert all(directory.startswith(f"{base}/.m.publish/") for directory in staged_in), staged_in
    assert len(seen) > 6 and [name for names in seen for name in names if not is_version_name(name)] == []
    assert entries(model_dir) == ["3"]


def _flaky_lease_writes(monkeypatch, fail: int | None):
    """storage.write_text failing with UNAVAILABLE on lease writes 2..fail+1 (every one after the
    first if fail is None); returns the list of (path, 'ok' | 'failed') the lease saw."""
    original, log = storage.write_text, []

    def write_text(path, text):
        if path.endswith("/" + locking.LOCK_FILE):
            failing = len(log) >= 1 and (fail is None or len(log) <= fail)
            log.append("failed" if failing else "ok")
            if failing:
                raise tf.errors.UnavailableError(None, None, "injected: the bucket did not answer")
        original(path, text)

    monkeypatch.setattr(storage, "write_text", write_text)
    return log


def _wait_for(condition, what, limit: float = 60.0) -> None:
    """Until condition() holds; else fail saying `what` (a string, or a callable for a late value)."""
    import time

    stop = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < stop, what() if callable(what) else what
        time.sleep(0.02)


@pytest.fixture
def short_lease(monkeypatch):
    monkeypatch.setattr(locking, "LEASE_SECONDS", 6.0)  # renewed every 2 s
    monkeypatch.setattr(locking, "RETRY_SECONDS", 0.1, raising=False)  # absent before retries existed
    monkeypatch.setattr(locking, "SETTLE_SECONDS", 0.05)


def test_a_transient_error_renewing_the_lease_is_retried_and_the_publish_goes_on(ram_base, no_servable_check,
                                                                                  short_lease, monkeypatch):
    log = _flaky_lease_writes(monkeypatch, fail=2)

    def write(directory, version):
        _wait_for(lambda: log.count("ok") >= 2, lambda: f"the lease was not renewed after a transient error: {log}")
        fake_servable("t")(directory, version)

    assert publish_fake(ram_base, write=write)["version"] == 1
    assert log[:4] == ["ok", "failed", "failed", "ok"]
    assert_complete(f"{ram_base}/m/1", "t")
    assert not tf.io.gfile.exists(f"{locking.publish_area(ram_base + '/m')}/{locking.LOCK_FILE}"), "released"


def test_a_lease_that_cannot_be_renewed_stops_the_publish_before_placing(ram_base, no_servable_check, short_lease,
                                                                         monkeypatch):
    import time

    log = _flaky_lease_writes(monkeypatch, fail=None)
    lease_file = f"{locking.publish_area(ram_base + '/m')}/{locking.LOCK_FILE}"

    def write(directory, version):
        fake_servable("t")(directory, version)
        expires = storage.read_json(lease_file)["expires"]
        _wait_for(lambda: time.time() > expires, "the lease did not expire")  # other exporters may take it now

    with pytest.raises(publish.PublishError, match=r"^the publish lease .* could not be renewed: UnavailableError: "
                                                   r"injected.*; nothing was published$"):
        publish_fake(ram_base, write=write)
    assert "failed" in log
    assert entries(f"{ram_base}/m") == [] and area_entries(f"{ram_base}/m") == []


THIEF = {"host": "thief-host", "pid": 99, "token": "0ther0wn"}


def test_a_lease_taken_over_stops_the_publish_before_placing(ram_base, no_servable_check, short_lease):
    import time

    lease_file = f"{locking.publish_area(ram_base + '/m')}/{locking.LOCK_FILE}"

    def write(directory, version):
        fake_servable("t")(directory, version)
        storage.write_json(lease_file, {**THIEF, "expires": time.time() + 600})  # our lease lapsed; theirs began

    with pytest.raises(publish.PublishError, match=r"^the publish lease .* was taken over by pid 99 on thief-host; "
                                                   r"nothing was published$"):
        publish_fake(ram_base, write=write)
    assert entries(f"{ram_base}/m") == [] and area_entries(f"{ram_base}/m") == []
    assert storage.read_json(lease_file)["token"] == THIEF["token"], "the new owner's lease is left alone"


def test_a_lease_taken_over_after_placing_stops_pruning(ram_base, no_servable_check, short_lease, monkeypatch, capsys):
    import time

    for _ in range(2):
        publish_fake(ram_base)
    lease_file = f"{locking.publish_area(ram_base + '/m')}/{locking.LOCK_FILE}"
    original = publish.put_in_place

    def place_then_lose_the_lease(*args, **kwargs):
        original(*args, **kwargs)
        storage.write_json(lease_file, {**THIEF, "expires": time.time() + 600})

    monkeypatch.setattr(publish, "put_in_place", place_then_lose_the_lease)
    result = publish_fake(ram_base, keep=1)
    assert result["version"] == 3 and result["removed_versions"] == []
    assert list_versions(f"{ram_base}/m") == [1, 2, 3], "the new owner decides what to prune"
    assert "stopped removing old versions (--keep 1): the publish lease" in capsys.readouterr().out


def test_a_lease_the_store_refuses_is_one_line_not_an_hours_wait(ram_base, no_servable_check, monkeypatch):
    original = storage.write_text

    def refuse(path, text):
        if path.endswith("/" + locking.LOCK_FILE):
            raise tf.errors.PermissionDeniedError(None, None, "injected: no write access to the bucket")
        original(path, text)

    monkeypatch.setattr(storage, "write_text", refuse)
    with pytest.raises(publish.PublishError, match=r"^cannot take the publish lease .*/\.m\.publish/lock: "
                                                   r"PermissionDeniedError: injected.*; nothing was published$"):
        publish_fake(ram_base)
    assert entries(f"{ram_base}/m") == []

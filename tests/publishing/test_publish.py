"""Publishing: versions, the publish lock and its lease, owned staging folders beside the model
directory, no-replace placement, two exporters at once, and the same on TF's in-memory ram://."""
import errno
import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid

import pytest
import tensorflow as tf

from model_api import signature as sig
from model_api.versions import list_versions
from tests.conftest import REPO
from publishing import locking, publish
from publishing import storage

IDENTITY = {"kind": "folder", "fingerprint": "sha256:same-photos"}
PARTS = 5  # files a fake servable holds besides saved_model.pb


def fake_servable(writer: str, accuracy: float = 0.9, pause: float = 0.0):
    """A write() that puts a small, recognisable version on any tf.io.gfile path."""
    import time

    def write(directory, version):
        storage.write_json(tf.io.gfile.join(directory, sig.MODEL_CARD_FILE),
                           {"data_identity": IDENTITY, "split": {"s": 1}, "test_metrics": {"accuracy": accuracy},
                            "writer": writer, "version": version})
        for i in range(PARTS):
            storage.write_text(tf.io.gfile.join(directory, "variables", f"part-{i}"), writer)
            time.sleep(pause)
        storage.write_text(tf.io.gfile.join(directory, storage.SAVED_MODEL_FILE), writer)
    return write


@pytest.fixture
def no_servable_check(monkeypatch):
    """These tests are about the file system; the servable gate has its own tests."""
    monkeypatch.setattr(publish, "check_servable", lambda staged, gate: {})


def _publish(base, accuracy=0.9, version=None, write=None, force=False, keep=0, serving_config=None):
    gate = publish.Gate(test_accuracy=accuracy, data_identity=IDENTITY, split={"s": 1}, force=force)
    return publish.publish(str(base), "m", write or fake_servable("t", accuracy), gate, version=version, keep=keep,
                           serving_config=serving_config)


def entries(model_dir) -> list[str]:
    """What TF Serving, copiers and people see in a model directory."""
    return sorted(n.rstrip("/") for n in tf.io.gfile.listdir(str(model_dir)))


def area_entries(model_dir) -> list[str]:
    """The publish area beside the model directory, without its lock file."""
    area = locking.publish_area(str(model_dir))
    return sorted(n.rstrip("/") for n in tf.io.gfile.listdir(area) if n.rstrip("/") != locking.LOCK_FILE)


def assert_complete(version_path: str, writer: str | None = None) -> str:
    """Every file of a fake servable is there and written by one writer; returns that writer."""
    join = tf.io.gfile.join
    card = storage.read_json(join(version_path, sig.MODEL_CARD_FILE))
    writer = writer or card["writer"]
    for name in [f"variables/part-{i}" for i in range(PARTS)] + [storage.SAVED_MODEL_FILE]:
        with tf.io.gfile.GFile(join(version_path, name)) as f:
            assert f.read() == writer, f"{version_path}/{name} was not written by {writer}"
    return writer


def test_versions_count_up_from_the_highest_present(tmp_path, no_servable_check):
    assert _publish(tmp_path)["version"] == 1
    (tmp_path / "m" / "7").mkdir()
    assert _publish(tmp_path)["version"] == 8
    assert list_versions(tmp_path / "m") == [1, 7, 8]


def test_export_refuses_to_overwrite_a_version(tmp_path, no_servable_check):
    _publish(tmp_path, version=3)
    before = os.listdir(tmp_path / "m" / "3")
    with pytest.raises(publish.PublishError, match="already exists"):
        _publish(tmp_path, version=3)
    assert os.listdir(tmp_path / "m" / "3") == before


def test_a_failed_gate_leaves_the_base_path_unchanged(tmp_path, no_servable_check):
    _publish(tmp_path, accuracy=0.95)
    before = entries(tmp_path / "m")
    with pytest.raises(publish.GateFailed, match="accuracy.*0.9000.*below version 1's 0.9500"):
        _publish(tmp_path, accuracy=0.90)
    assert entries(tmp_path / "m") == before
    assert _publish(tmp_path, accuracy=0.90, force=True)["gate"]["forced"]


def test_keep_prunes_old_versions_but_never_a_labelled_one(tmp_path, no_servable_check):
    for _ in range(4):
        _publish(tmp_path)
    config = tmp_path / "models.config"
    config.write_text(textwrap.dedent("""
        model_config_list { config { name: "m" base_path: "/models/m" model_platform: "tensorflow"
          version_labels { key: "stable" value: 1 } } }"""))
    result = _publish(tmp_path, keep=2, serving_config=str(config))
    assert result["removed_versions"] == [2, 3]
    assert list_versions(tmp_path / "m") == [1, 4, 5]
    assert entries(tmp_path / "m") == ["1", "4", "5"], "no trash folder is left behind"


def test_keep_removes_a_zero_padded_version_from_its_own_folder(tmp_path, no_servable_check):
    """TF Serving reads "00001/" as version 1 (file_system_storage_path_source.cc): so does --keep."""
    _publish(tmp_path, version=1)
    os.rename(tmp_path / "m" / "1", tmp_path / "m" / "00001")
    _publish(tmp_path)
    result = _publish(tmp_path, keep=1)
    assert result["removed_versions"] == [1, 2]
    assert entries(tmp_path / "m") == ["3"]


def test_the_regression_gate_reads_the_newest_card_from_a_zero_padded_folder(tmp_path, no_servable_check):
    _publish(tmp_path, accuracy=0.95, version=7)
    os.rename(tmp_path / "m" / "7", tmp_path / "m" / "0007")
    with pytest.raises(publish.GateFailed, match="0.95"):
        _publish(tmp_path, accuracy=0.5)  # compared with version 7's 0.95, not with nothing


@pytest.mark.parametrize("text, message", [(None, "cannot read --serving-config"),
                                           ("model_config_list { config { nme: 'm' } }", "not a TF Serving")])
def test_a_bad_serving_config_publishes_nothing(tmp_path, no_servable_check, text, message):
    """Read before the version is placed: a retried Job must not publish one more version per try."""
    config = tmp_path / "models.config"
    if text is not None:
        config.write_text(text)
    for _ in range(2):
        with pytest.raises(publish.PublishError, match=message):
            _publish(tmp_path, keep=1, serving_config=str(config))
    assert not (tmp_path / "m").exists() or list_versions(tmp_path / "m") == []


def test_a_process_killed_during_export_leaves_no_version_behind(tmp_path, no_servable_check):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from publishing import publish
        def write(directory, version):
            os.makedirs(directory)
            open(os.path.join(directory, "saved_model.pb"), "wb").write(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)  # dies half-way through writing
        publish.publish({str(tmp_path)!r}, "m", write, publish.Gate(test_accuracy=1.0))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert result.returncode == -9
    leftovers = area_entries(tmp_path / "m")
    assert entries(tmp_path / "m") == [] and len(leftovers) == 1 and leftovers[0].startswith(".staging-")
    assert locking.owner_of(leftovers[0]).pid > 0, "the staging folder names its owner"
    assert _publish(tmp_path)["version"] == 1, "the lock died with its process"
    assert entries(tmp_path / "m") == ["1"]
    assert area_entries(tmp_path / "m") == [], "the next export removes the abandoned staging folder"


def test_a_live_exporters_staging_folder_is_left_alone(tmp_path, no_servable_check):
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = locking.Owner.new().host
        area = tmp_path / ".m.publish"
        live = area / locking.Owner(host, alive.pid, "0123abcd").staging_name()
        other_process_of_ours = area / locking.Owner(host, os.getpid(), "feedbeef").staging_name()
        legacy = tmp_path / "m" / ".staging-3-1a2b3c4d"  # where and how exports once staged, before owners
        for folder in (live, other_process_of_ours, legacy):
            folder.mkdir(parents=True)
        _publish(tmp_path)
        assert live.exists(), "a running exporter's work must survive"
        assert not other_process_of_ours.exists() and not legacy.exists()
    finally:
        alive.kill()
        alive.wait()
    _publish(tmp_path)
    assert not live.exists(), "once its owner is gone it is abandoned"


def test_placement_never_lands_on_a_version_created_meanwhile(tmp_path, no_servable_check):
    """rename(2) onto an empty directory succeeds; the publish must refuse instead."""
    def write_then_race(directory, version):
        fake_servable("late")(directory, version)
        (tmp_path / "m" / str(version)).mkdir()  # someone else creates the version meanwhile

    with pytest.raises(publish.PublishError, match="appeared .* while exporting; not overwritten"):
        _publish(tmp_path, write=write_then_race)
    assert os.listdir(tmp_path / "m" / "1") == [], "the other version is untouched"
    assert entries(tmp_path / "m") == ["1"], "and our staging folder is gone"


TWO_EXPORTERS = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {repo!r})
    from tests.publishing.test_publish import IDENTITY, fake_servable
    from publishing import publish
    publish.check_servable = lambda staged, gate: {{}}
    base, me, other = sys.argv[1], sys.argv[2], sys.argv[3]
    open(os.path.join(base, me + ".ready"), "w").close()
    while not os.path.exists(os.path.join(base, other + ".ready")):  # start together
        time.sleep(0.01)
    gate = publish.Gate(test_accuracy=0.9, data_identity=IDENTITY, split={{"s": 1}})
    result = publish.publish(base, "m", fake_servable(me, pause=0.1), gate)
    print("RESULT " + json.dumps(result))
""")


def test_two_exporters_at_once_publish_two_complete_distinct_versions(tmp_path):
    script = TWO_EXPORTERS.format(repo=str(REPO))
    exporters = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), me, other], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for me, other in (("a", "b"), ("b", "a"))]
    outputs = [p.communicate(timeout=300)[0] for p in exporters]
    assert [p.returncode for p in exporters] == [0, 0], outputs
    results = [json.loads(line[len("RESULT "):]) for out in outputs for line in out.splitlines()
               if line.startswith("RESULT ")]
    assert sorted(r["version"] for r in results) == [1, 2]
    assert list_versions(tmp_path / "m") == [1, 2]
    writers = {assert_complete(str(tmp_path / "m" / str(v))) for v in (1, 2)}
    assert writers == {"a", "b"}, "each exporter's version is whole and its own"
    assert entries(tmp_path / "m") == ["1", "2"] and area_entries(tmp_path / "m") == [], "no staging folder is left"
    assert sum("waiting for the publish lock" in out for out in outputs) == 1, outputs


# --- ram:// : no atomic rename, no os calls -------------------------------------------------

@pytest.fixture
def ram_base():
    base = f"ram://publish-{uuid.uuid4().hex[:8]}/models"
    yield base
    if tf.io.gfile.exists(base):
        storage.remove_tree(base)


def test_publish_on_ram_copies_into_place_with_saved_model_pb_last(ram_base, no_servable_check, monkeypatch):
    copied = []
    # Spy on the gfile module storage.py calls: after a job has run in the same process
    # (tests/training/test_gfile_paths.py), `tf.io.gfile` can be another module object than storage.gfile.
    original = storage.gfile.copy

    def spy(source, target, overwrite=False):
        copied.append(target)
        return original(source, target, overwrite=overwrite)

    monkeypatch.setattr(storage.gfile, "copy", spy)
    result = _publish(ram_base)
    assert result["version"] == 1 and result["path"] == f"{ram_base}/m/1"
    assert list_versions(f"{ram_base}/m") == [1]
    assert_complete(f"{ram_base}/m/1", "t")
    assert copied[-1] == f"{ram_base}/m/1/{storage.SAVED_MODEL_FILE}", "saved_model.pb is the completion marker"
    assert len(copied) == PARTS + 2
    assert entries(f"{ram_base}/m") == ["1"]


def test_ram_versions_count_up_refuse_overwrite_and_prune(ram_base, no_servable_check):
    for expected in (1, 2, 3):
        assert _publish(ram_base)["version"] == expected
    with pytest.raises(publish.PublishError, match="already exists"):
        _publish(ram_base, version=2)
    assert _publish(ram_base, keep=2)["removed_versions"] == [1, 2]
    assert list_versions(f"{ram_base}/m") == [3, 4]
    assert not tf.io.gfile.exists(f"{ram_base}/m/1/{storage.SAVED_MODEL_FILE}")


def test_an_interrupted_copy_removes_its_half_version(ram_base, no_servable_check, monkeypatch):
    """Ctrl-C (or SystemExit from a signal handler) mid-copy: no integer folder without saved_model.pb stays."""
    original = storage.copy_tree

    def interrupted(source, target, before_each=None):
        storage.write_text(tf.io.gfile.join(target, "variables", "part-0"), "half")
        raise KeyboardInterrupt

    monkeypatch.setattr(storage, "copy_tree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _publish(ram_base)
    assert entries(f"{ram_base}/m") == []
    monkeypatch.setattr(storage, "copy_tree", original)
    assert _publish(ram_base)["version"] == 1


def test_a_version_left_half_copied_by_a_dead_export_is_removed_by_the_next(ram_base, no_servable_check, capsys):
    """A killed process cleans nothing: its `placing-<n>` marker lets the next publisher, under the
    lock, prove `<n>/` abandoned. Versions without a marker are never touched (a hand-copied
    version with saved_model.pbtxt, a writer that takes no lock)."""
    model_dir = f"{ram_base}/m"
    _publish(ram_base)
    area = locking.publish_area(model_dir)
    dead = locking.Owner("another-host", 4242, "dead0000")
    storage.write_text(f"{area}/{dead.staging_name('placing-2')}", "")
    storage.write_text(f"{model_dir}/2/variables/part-0", "half")
    storage.write_text(f"{model_dir}/{dead.staging_name('removing-1')}", "")  # an older export's marker, in <model>/
    assert _publish(ram_base)["version"] == 3, "a number TF Serving may have seen fail is not reused"
    assert entries(model_dir) == ["1", "3"] and area_entries(model_dir) == []
    assert_complete(f"{model_dir}/1", "t")
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if "removed version" in line] == [
        (f"[export] removed version 2, left without {storage.SAVED_MODEL_FILE} by an export that stopped while "
         "placing it")]
    storage.write_text(f"{model_dir}/7/saved_model.pbtxt", "by hand")
    storage.write_text(f"{model_dir}/9/variables/part-0", "a copy in progress, without the lock")
    assert _publish(ram_base)["version"] == 10
    assert entries(model_dir) == ["1", "10", "3", "7", "9"]


def test_two_exporters_on_ram_publish_two_complete_distinct_versions(ram_base, no_servable_check):
    results, errors = {}, []
    barrier = threading.Barrier(2)

    def exporter(me):
        try:
            barrier.wait()
            gate = publish.Gate(test_accuracy=0.9, data_identity=IDENTITY, split={"s": 1})
            results[me] = publish.publish(ram_base, "m", fake_servable(me, pause=0.05), gate)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=exporter, args=(me,)) for me in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert sorted(r["version"] for r in results.values()) == [1, 2]
    assert {assert_complete(f"{ram_base}/m/{v}") for v in (1, 2)} == {"a", "b"}
    assert entries(f"{ram_base}/m") == ["1", "2"]


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
        _publish(tmp_path)
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
        _publish(base, write=write, keep=1)
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

    assert _publish(ram_base, write=write)["version"] == 1
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
        _publish(ram_base, write=write)
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
        _publish(ram_base, write=write)
    assert entries(f"{ram_base}/m") == [] and area_entries(f"{ram_base}/m") == []
    assert storage.read_json(lease_file)["token"] == THIEF["token"], "the new owner's lease is left alone"


def test_a_lease_taken_over_after_placing_stops_pruning(ram_base, no_servable_check, short_lease, monkeypatch, capsys):
    import time

    for _ in range(2):
        _publish(ram_base)
    lease_file = f"{locking.publish_area(ram_base + '/m')}/{locking.LOCK_FILE}"
    original = publish.put_in_place

    def place_then_lose_the_lease(*args, **kwargs):
        original(*args, **kwargs)
        storage.write_json(lease_file, {**THIEF, "expires": time.time() + 600})

    monkeypatch.setattr(publish, "put_in_place", place_then_lose_the_lease)
    result = _publish(ram_base, keep=1)
    assert result["version"] == 3 and result["removed_versions"] == []
    assert list_versions(f"{ram_base}/m") == [1, 2, 3], "the new owner decides what to prune"
    assert "stopped removing old versions (--keep 1): the publish lease" in capsys.readouterr().out


def test_a_model_directory_mounted_on_its_own_is_refused_before_writing(tmp_path, no_servable_check, monkeypatch):
    """Staging beside `<model>/` on another filesystem could not be renamed into it atomically."""
    real_stat = os.stat

    class Elsewhere:
        def __init__(self, stat):
            self.st_dev = stat.st_dev + 1

    monkeypatch.setattr(os, "stat", lambda path, *a, **k: Elsewhere(real_stat(path, *a, **k))
                        if str(path).rstrip("/").endswith("/m") else real_stat(path, *a, **k))
    with pytest.raises(publish.PublishError, match=r"m is a mount point of its own.*mount .* instead"):
        _publish(tmp_path, write=lambda directory, version: pytest.fail("nothing is written"))


def test_a_lease_the_store_refuses_is_one_line_not_an_hours_wait(ram_base, no_servable_check, monkeypatch):
    original = storage.write_text

    def refuse(path, text):
        if path.endswith("/" + locking.LOCK_FILE):
            raise tf.errors.PermissionDeniedError(None, None, "injected: no write access to the bucket")
        original(path, text)

    monkeypatch.setattr(storage, "write_text", refuse)
    with pytest.raises(publish.PublishError, match=r"^cannot take the publish lease .*/\.m\.publish/lock: "
                                                   r"PermissionDeniedError: injected.*; nothing was published$"):
        _publish(ram_base)
    assert entries(f"{ram_base}/m") == []

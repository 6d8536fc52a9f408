"""Publishing: versions, owned staging folders, no-replace placement, pruning, two exporters at once,
and the same on TF's in-memory ram:// (the lock and lease: test_locking.py)."""
import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest
import tensorflow as tf

from model_api.versions import list_versions
from publishing import locking, publish, storage
from tests.conftest import REPO
from tests.publishing.conftest import (IDENTITY, PARTS, area_entries, assert_complete, entries, fake_servable,
                                       publish_fake)


def test_versions_count_up_from_the_highest_present(tmp_path, no_servable_check):
    assert publish_fake(tmp_path)["version"] == 1
    (tmp_path / "m" / "7").mkdir()
    assert publish_fake(tmp_path)["version"] == 8
    assert list_versions(tmp_path / "m") == [1, 7, 8]


def test_export_refuses_to_overwrite_a_version(tmp_path, no_servable_check):
    publish_fake(tmp_path, version=3)
    before = os.listdir(tmp_path / "m" / "3")
    with pytest.raises(publish.PublishError, match="already exists"):
        publish_fake(tmp_path, version=3)
    assert os.listdir(tmp_path / "m" / "3") == before


def test_a_failed_gate_leaves_the_base_path_unchanged(tmp_path, no_servable_check):
    publish_fake(tmp_path, accuracy=0.95)
    before = entries(tmp_path / "m")
    with pytest.raises(publish.GateFailed, match="accuracy.*0.9000.*below version 1's 0.9500"):
        publish_fake(tmp_path, accuracy=0.90)
    assert entries(tmp_path / "m") == before
    assert publish_fake(tmp_path, accuracy=0.90, force=True)["gate"]["forced"]


def test_keep_prunes_old_versions_but_never_a_labelled_one(tmp_path, no_servable_check):
    for _ in range(4):
        publish_fake(tmp_path)
    config = tmp_path / "models.config"
    config.write_text(textwrap.dedent("""
        model_config_list { config { name: "m" base_path: "/models/m" model_platform: "tensorflow"
          version_labels { key: "stable" value: 1 } } }"""))
    result = publish_fake(tmp_path, keep=2, serving_config=str(config))
    assert result["removed_versions"] == [2, 3]
    assert list_versions(tmp_path / "m") == [1, 4, 5]
    assert entries(tmp_path / "m") == ["1", "4", "5"], "no trash folder is left behind"


def test_keep_removes_a_zero_padded_version_from_its_own_folder(tmp_path, no_servable_check):
    """TF Serving reads "00001/" as version 1 (file_system_storage_path_source.cc): so does --keep."""
    publish_fake(tmp_path, version=1)
    os.rename(tmp_path / "m" / "1", tmp_path / "m" / "00001")
    publish_fake(tmp_path)
    result = publish_fake(tmp_path, keep=1)
    assert result["removed_versions"] == [1, 2]
    assert entries(tmp_path / "m") == ["3"]


def test_the_regression_gate_reads_the_newest_card_from_a_zero_padded_folder(tmp_path, no_servable_check):
    publish_fake(tmp_path, accuracy=0.95, version=7)
    os.rename(tmp_path / "m" / "7", tmp_path / "m" / "0007")
    with pytest.raises(publish.GateFailed, match="0.95"):
        publish_fake(tmp_path, accuracy=0.5)  # compared with version 7's 0.95, not with nothing


@pytest.mark.parametrize("text, message", [(None, "cannot read --serving-config"),
                                           ("model_config_list { config { nme: 'm' } }", "not a TF Serving")])
def test_a_bad_serving_config_publishes_nothing(tmp_path, no_servable_check, text, message):
    """Read before the version is placed: a retried Job must not publish one more version per try."""
    config = tmp_path / "models.config"
    if text is not None:
        config.write_text(text)
    for _ in range(2):
        with pytest.raises(publish.PublishError, match=message):
            publish_fake(tmp_path, keep=1, serving_config=str(config))
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
    assert publish_fake(tmp_path)["version"] == 1, "the lock died with its process"
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
        publish_fake(tmp_path)
        assert live.exists(), "a running exporter's work must survive"
        assert not other_process_of_ours.exists() and not legacy.exists()
    finally:
        alive.kill()
        alive.wait()
    publish_fake(tmp_path)
    assert not live.exists(), "once its owner is gone it is abandoned"


def test_placement_never_lands_on_a_version_created_meanwhile(tmp_path, no_servable_check):
    """rename(2) onto an empty directory succeeds; the publish must refuse instead."""
    def write_then_race(directory, version):
        fake_servable("late")(directory, version)
        (tmp_path / "m" / str(version)).mkdir()  # someone else creates the version meanwhile

    with pytest.raises(publish.PublishError, match="appeared .* while exporting; not overwritten"):
        publish_fake(tmp_path, write=write_then_race)
    assert os.listdir(tmp_path / "m" / "1") == [], "the other version is untouched"
    assert entries(tmp_path / "m") == ["1"], "and our staging folder is gone"


TWO_EXPORTERS = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {repo!r})
    from tests.publishing.conftest import IDENTITY, fake_servable
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

def test_publish_on_ram_copies_into_place_with_saved_model_pb_last(ram_base, no_servable_check, monkeypatch):
    copied = []
    # Spy on the gfile module storage.py calls: after a job has run in the same process
    # (tests/training/test_gfile_paths.py), `tf.io.gfile` can be another module object than storage.gfile.
    original = storage.gfile.copy

    def spy(source, target, overwrite=False):
        copied.append(target)
        return original(source, target, overwrite=overwrite)

    monkeypatch.setattr(storage.gfile, "copy", spy)
    result = publish_fake(ram_base)
    assert result["version"] == 1 and result["path"] == f"{ram_base}/m/1"
    assert list_versions(f"{ram_base}/m") == [1]
    assert_complete(f"{ram_base}/m/1", "t")
    assert copied[-1] == f"{ram_base}/m/1/{storage.SAVED_MODEL_FILE}", "saved_model.pb is the completion marker"
    assert len(copied) == PARTS + 2
    assert entries(f"{ram_base}/m") == ["1"]


def test_ram_versions_count_up_refuse_overwrite_and_prune(ram_base, no_servable_check):
    for expected in (1, 2, 3):
        assert publish_fake(ram_base)["version"] == expected
    with pytest.raises(publish.PublishError, match="already exists"):
        publish_fake(ram_base, version=2)
    assert publish_fake(ram_base, keep=2)["removed_versions"] == [1, 2]
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
        publish_fake(ram_base)
    assert entries(f"{ram_base}/m") == []
    monkeypatch.setattr(storage, "copy_tree", original)
    assert publish_fake(ram_base)["version"] == 1


def test_a_version_left_half_copied_by_a_dead_export_is_removed_by_the_next(ram_base, no_servable_check, capsys):
    """A killed process cleans nothing: its `placing-<n>` marker lets the next publisher, under the
    lock, prove `<n>/` abandoned. Versions without a marker are never touched (a hand-copied
    version with saved_model.pbtxt, a writer that takes no lock)."""
    model_dir = f"{ram_base}/m"
    publish_fake(ram_base)
    area = locking.publish_area(model_dir)
    dead = locking.Owner("another-host", 4242, "dead0000")
    storage.write_text(f"{area}/{dead.staging_name('placing-2')}", "")
    storage.write_text(f"{model_dir}/2/variables/part-0", "half")
    storage.write_text(f"{model_dir}/{dead.staging_name('removing-1')}", "")  # an older export's marker, in <model>/
    assert publish_fake(ram_base)["version"] == 3, "a number TF Serving may have seen fail is not reused"
    assert entries(model_dir) == ["1", "3"] and area_entries(model_dir) == []
    assert_complete(f"{model_dir}/1", "t")
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if "removed version" in line] == [
        (f"[export] removed version 2, left without {storage.SAVED_MODEL_FILE} by an export that stopped while "
         "placing it")]
    storage.write_text(f"{model_dir}/7/saved_model.pbtxt", "by hand")
    storage.write_text(f"{model_dir}/9/variables/part-0", "a copy in progress, without the lock")
    assert publish_fake(ram_base)["version"] == 10
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


def test_a_model_directory_mounted_on_its_own_is_refused_before_writing(tmp_path, no_servable_check, monkeypatch):
    """Staging beside `<model>/` on another filesystem could not be renamed into it atomically."""
    real_stat = os.stat

    class Elsewhere:
        def __init__(self, stat):
            self.st_dev = stat.st_dev + 1

    monkeypatch.setattr(os, "stat", lambda path, *a, **k: Elsewhere(real_stat(path, *a, **k))
                        if str(path).rstrip("/").endswith("/m") else real_stat(path, *a, **k))
    with pytest.raises(publish.PublishError, match=r"m is a mount point of its own.*mount .* instead"):
        publish_fake(tmp_path, write=lambda directory, version: pytest.fail("nothing is written"))

"""Version policy, labels, failed loads, hot swap under load and config reload, like TF Serving's ServerCore."""
import logging
import os
import shutil
import threading
import time

import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.config import model_server_config_pb2

from model_api.status import CODE_NAMES
from serving.config_reload import parse_config_file
from serving.errors import ServingError
from serving.registry import ModelRegistry, StartupError, State
from serving.version_policy import wanted_versions


def spec(name="pets", version=None, label=None):
    s = model_pb2.ModelSpec(name=name)
    if version is not None:
        s.version.value = version
    if label is not None:
        s.version_label = label
    return s


def copy_version(base, source: int, target: int, name="pets"):
    """Copy a version the safe way: into a non-integer name, then rename."""
    staging = base / name / f".copy-{target}"
    shutil.copytree(base / name / str(source), staging)
    os.rename(staging, base / name / str(target))


def start_in_background(registry: ModelRegistry) -> tuple[threading.Thread, list]:
    """registry.start() on a thread, as it blocks until the models load: (the thread, the StartupErrors
    it raised)."""
    failures = []

    def start():
        try:
            registry.start()
        except StartupError as err:
            failures.append(err)

    thread = threading.Thread(target=start)
    thread.start()
    return thread, failures


def config(text: str) -> model_server_config_pb2.ModelConfig:
    return text_format.Parse(text, model_server_config_pb2.ModelConfig())


@pytest.mark.parametrize("policy,expected", [
    ("", [5]),
    ("model_version_policy { latest { num_versions: 2 } }", [3, 5]),
    ("model_version_policy { all {} }", [1, 3, 5]),
    ("model_version_policy { specific { versions: 1 versions: 4 } }", [1]),
])
def test_version_policy_picks_what_tf_serving_would(policy, expected):
    assert wanted_versions(config(f'name: "m" base_path: "/x" {policy}'), [1, 3, 5]) == expected


CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "serving", "config")


def test_the_shipped_models_configs_parse_with_tf_servings_protos():
    default = parse_config_file(os.path.join(CONFIG_DIR, "models.config"))
    labelled = parse_config_file(os.path.join(CONFIG_DIR, "models.labels.config"))
    assert [c.base_path for c in default] == ["/models/cats_vs_dogs"]
    assert dict(labelled[0].version_labels) == {"stable": 1, "canary": 2}
    assert set(labelled[0].model_version_policy.specific.versions) == {1, 2}


def test_the_shipped_batching_and_monitoring_configs_parse_with_tf_servings_protos():
    from serving.config_protos import BatchingParameters, MonitoringConfig

    with open(os.path.join(CONFIG_DIR, "batching_parameters.txt")) as f:
        batching = text_format.Parse(f.read(), BatchingParameters())
    assert batching.max_batch_size.value == 32  # client/api.py DEFAULT_BATCH_SIZE must fit
    # TF Serving requires increasing allowed sizes ending at max_batch_size, when there are any.
    sizes = list(batching.allowed_batch_sizes)
    assert sizes == sorted(sizes) and (not sizes or sizes[-1] == 32)
    with open(os.path.join(CONFIG_DIR, "monitoring.config")) as f:
        monitoring = text_format.Parse(f.read(), MonitoringConfig())
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_latest_specific_and_label_resolution_with_tf_serving_errors(model_base, tmp_path):
    base = tmp_path / "models"
    shutil.copytree(model_base / "pets" / "1", base / "pets" / "1")
    copy_version(base, 1, 2)
    registry = ModelRegistry([config(f'name: "pets" base_path: "{base}/pets" model_version_policy {{ all {{}} }} '
                                     'version_labels { key: "stable" value: 1 } '
                                     'version_labels { key: "canary" value: 2 }')], poll_seconds=0)
    registry.start()
    assert registry.resolve(spec()).version == 2
    assert registry.resolve(spec(version=1)).version == 1
    assert registry.resolve(spec(label="stable")).version == 1
    for request, code, message in [
        (spec(version=9), "NOT_FOUND", "Servable not found for request: Specific(pets, 9)"),
        (spec(name="nope"), "NOT_FOUND", "Servable not found for request: Latest(nope)"),
        (spec(label="beta"), "INVALID_ARGUMENT", "Unrecognized servable version label: beta"),
    ]:
        with pytest.raises(ServingError) as info:
            registry.resolve(request)
        assert (info.value.code.name, info.value.message) == (code, message)
    states = registry.statuses(spec())
    # Newest first: ServableStateMonitor's VersionMap is ordered by std::greater<Version>.
    assert [(v, s.state) for v, s in states] == [(2, State.AVAILABLE), (1, State.AVAILABLE)]
    # GetModelStatus reads only has_version(): a label, known or not, gives every version.
    for label in ("stable", "beta"):
        assert [(v, s.state) for v, s in registry.statuses(spec(label=label))] == [(2, State.AVAILABLE),
                                                                                 (1, State.AVAILABLE)]
    with pytest.raises(ServingError, match="Could not find any versions of model nope"):
        registry.statuses(spec(name="nope", label="stable"))
    with pytest.raises(ServingError, match="Could not find version 7 of model pets"):
        registry.statuses(spec(version=7))


def count_loads(monkeypatch) -> list[int]:
    """The versions Servable.load is called for, in order."""
    from serving.servable import Servable

    calls, real_load = [], Servable.load

    def load(name, version, path, scheduler=None):
        calls.append(version)
        return real_load(name, version, path, scheduler)

    monkeypatch.setattr(Servable, "load", staticmethod(load))
    return calls


def test_a_version_that_fails_to_load_is_reported_and_the_previous_keeps_serving(model_base, tmp_path, monkeypatch):
    base = tmp_path / "models"
    shutil.copytree(model_base / "pets" / "1", base / "pets" / "1")
    registry = ModelRegistry([config(f'name: "pets" base_path: "{base}/pets"')], poll_seconds=0,
                             load_retry_interval_seconds=0.0, max_num_load_retries=1)
    registry.start()
    loads = count_loads(monkeypatch)
    (base / "pets" / "2").mkdir()
    (base / "pets" / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
    registry.poll_once()
    assert loads == [2, 2], "the first attempt and max_num_load_retries (1) more"
    assert registry.resolve(spec()).version == 1
    failed = dict(registry.statuses(spec()))[2]
    assert failed.state == State.END and failed.error_code != 0 and "failed to load pets version 2" in failed.error_message
    registry.poll_once()
    registry.poll_once()
    assert loads == [2, 2], "a version that failed for good is not tried again while it is aspired"
    assert registry.resolve(spec()).version == 1


def test_a_new_version_is_served_within_the_poll_interval_while_requests_keep_succeeding(model_base, tmp_path,
                                                                                         cat_jpeg):
    from tensorflow_serving.apis import predict_pb2
    import tensorflow as tf

    from serving.handlers import predict

    base = tmp_path / "models"
    shutil.copytree(model_base / "pets" / "1", base / "pets" / "1")
    registry = ModelRegistry([config(f'name: "pets" base_path: "{base}/pets"')], poll_seconds=0.2)
    registry.start()
    request = predict_pb2.PredictRequest(model_spec=spec())
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([cat_jpeg]))
    answered, failures, stop = [], [], threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                answered.append(predict(registry, request).model_spec.version.value)
            except Exception as err:  # noqa: BLE001
                failures.append(err)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        copy_version(base, 1, 2)
        copied = time.monotonic()
        while registry.resolve(spec()).version != 2 and time.monotonic() - copied < 120:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
        registry.stop()
    assert failures == []
    assert answered[0] == 1 and answered[-1] == 2 and answered.count(2) > 0
    assert dict(registry.statuses(spec()))[1].state == State.END, "the old version is unloaded"


def test_a_failed_load_reports_its_errors_code_by_number():
    from model_api.session_bundle import BundleError
    from serving.errors import not_found
    from serving.registry import _code_number

    assert _code_number(BundleError("Can't parse saved_model.pb", "DATA_LOSS")) == (15, "Can't parse saved_model.pb")
    assert _code_number(not_found("no such file")) == (5, "no such file")
    assert _code_number(RuntimeError("boom\nmore")) == (2, "RuntimeError: boom")


def test_stop_waiting_makes_a_start_still_waiting_for_versions_give_up(tmp_path):
    (tmp_path / "pets").mkdir()
    registry = ModelRegistry([config(f'name: "pets" base_path: "{tmp_path}/pets"')], poll_seconds=30)
    thread, failures = start_in_background(registry)
    time.sleep(0.5)
    registry.stop_waiting()  # what the SIGTERM handler calls: it only sets a flag
    thread.join(10)  # well inside the 30 s poll wait
    assert not thread.is_alive(), "stop_waiting() did not cut the 30 s poll wait short"
    assert "stopped while waiting" in str(failures[0])
    registry.stop()


# --- config reload and load/unload events ---------------------------------------------------

def two_models(model_base, tmp_path):
    """<tmp>/models/{pets,dogs}/1: two models (the same tiny export)."""
    base = tmp_path / "models"
    for name in ("pets", "dogs"):
        shutil.copytree(model_base / "pets" / "1", base / name / "1")
    return base


def model_config(base, name, extra=""):
    return config(f'name: "{name}" base_path: "{base}/{name}" model_platform: "tensorflow" {extra}')


def test_reload_config_adds_a_model_without_restart_and_leaves_the_first_alone(model_base, tmp_path, monkeypatch,
                                                                             caplog):
    base = two_models(model_base, tmp_path)
    registry = ModelRegistry([model_config(base, "pets")], poll_seconds=0)
    registry.start()
    pets = registry.resolve(spec())
    loads = count_loads(monkeypatch)
    new_list = [model_config(base, "dogs"), model_config(base, "pets")]
    registry.reload_config(new_list)
    assert registry.resolve(spec(name="dogs")).version == 1, "loaded before reload_config returns"
    assert registry.resolve(spec()) is pets, "an unchanged model is not reloaded"
    assert loads == [1] and registry.model_names() == ["dogs", "pets"]
    with caplog.at_level(logging.INFO, logger="serving"):
        registry.reload_config(new_list)
    assert not [r for r in caplog.records if "reloaded" in r.getMessage()], "the same list again is a no-op"
    registry.stop()


def test_reload_config_removes_a_model(model_base, tmp_path):
    base = two_models(model_base, tmp_path)
    registry = ModelRegistry([model_config(base, "pets"), model_config(base, "dogs")], poll_seconds=0)
    registry.start()
    registry.reload_config([model_config(base, "dogs")])
    with pytest.raises(ServingError, match=r"Servable not found for request: Latest\(pets\)"):
        registry.resolve(spec())
    assert [(v, s.state) for v, s in registry.statuses(spec())] == [(1, State.END)], "GetModelStatus still answers"
    assert registry.resolve(spec(name="dogs")).version == 1
    registry.stop()


def test_reload_config_applies_a_changed_version_policy_and_labels(model_base, tmp_path):
    base = tmp_path / "models"
    shutil.copytree(model_base / "pets" / "1", base / "pets" / "1")
    copy_version(base, 1, 2)
    registry = ModelRegistry([model_config(base, "pets")], poll_seconds=0)
    registry.start()
    assert registry.resolve(spec()).version == 2
    registry.reload_config([model_config(base, "pets", "model_version_policy { specific { versions: 1 } }")])
    assert registry.resolve(spec()).version == 1
    assert dict(registry.statuses(spec()))[2].state == State.END
    registry.reload_config([model_config(base, "pets", "model_version_policy { specific { versions: 1 } } "
                                                      'version_labels { key: "stable" value: 1 }')])
    assert registry.resolve(spec(label="stable")).version == 1
    registry.stop()


@pytest.mark.parametrize("configs, code, message", [
    (lambda b: [model_config(b, "pets"), model_config(b, "pets")],
     "INVALID_ARGUMENT", "Illegal to list model pets multiple times in config list"),
    (lambda b: [config('name: "dogs" base_path: "models/dogs" model_platform: "tensorflow"')],
     "INVALID_ARGUMENT", "Expected model dogs to have an absolute path or URI; got base_path()=models/dogs"),
    (lambda b: [config(f'name: "pets" base_path: "{b}/pets"')], "INVALID_ARGUMENT",
     "Illegal setting neither ModelServerConfig::model_type (deprecated) nor ModelServerConfig::model_platform, "
     "model name is pets"),
    (lambda b: [config(f'name: "pets" base_path: "{b}/pets" model_platform: "onnx"')], "INVALID_ARGUMENT",
     "Illegal to change a model's platform. For model pets platform was tensorflow and new platform requested "
     "is onnx"),
    (lambda b: [model_config(b, "pets"), config(f'name: "dogs" base_path: "{b}/dogs" model_platform: "onnx"')],
     "INVALID_ARGUMENT", "Model dogs requests unsupported platform onnx"),
    (lambda b: [model_config(b, "pets", 'version_labels { key: "canary" value: 2 }')], "FAILED_PRECONDITION",
     "Request to assign label to version 2 of model pets, which is not currently available for inference"),
])
def test_reload_config_refuses_a_bad_config_with_tf_servings_message_and_changes_nothing(
        model_base, tmp_path, configs, code, message):
    base = two_models(model_base, tmp_path)
    registry = ModelRegistry([model_config(base, "pets")], poll_seconds=0)
    registry.start()
    with pytest.raises(ServingError) as info:
        registry.reload_config(configs(base))
    assert (info.value.code.name, info.value.message) == (code, message)
    assert registry.model_names() == ["pets"] and registry.resolve(spec()).version == 1
    with pytest.raises(ServingError, match="Unrecognized servable version label: canary"):
        registry.resolve(spec(label="canary"))
    registry.stop()


def test_reload_config_accepts_a_new_base_path_as_tf_serving_does(model_base, tmp_path, monkeypatch):
    """ServerCore has no rule against it: the source lists the new path; a version number already
    served stays loaded (same ServableId), new numbers load from the new path."""
    base = two_models(model_base, tmp_path)
    registry = ModelRegistry([model_config(base, "pets")], poll_seconds=0)
    registry.start()
    served = registry.resolve(spec())
    copy_version(base, 1, 2, name="dogs")
    loads = count_loads(monkeypatch)
    registry.reload_config([config(f'name: "pets" base_path: "{base}/dogs" model_type: TENSORFLOW')])
    assert loads == [2] and registry.resolve(spec()).version == 2
    assert dict(registry.statuses(spec()))[1].state == State.END and served.version == 1
    registry.stop()


def test_reload_config_reports_a_new_model_that_fails_to_load(model_base, tmp_path):
    base = two_models(model_base, tmp_path)
    (base / "dogs" / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    registry = ModelRegistry([model_config(base, "pets")], poll_seconds=0, max_num_load_retries=0)
    registry.start()
    with pytest.raises(ServingError) as info:
        registry.reload_config([model_config(base, "pets"), model_config(base, "dogs")])
    assert info.value.code.name == "UNKNOWN"
    assert info.value.message.startswith("1 model(s) did not become available: {{{name: dogs version: 1} "
                                         "due to error: DATA_LOSS: ")
    assert registry.resolve(spec()).version == 1
    registry.stop()


def write_config_file(path, text):
    """Replace the file in one rename, as a config should be updated under a polling server."""
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(text)
    os.replace(staging, path)


def wait_for(condition, what, seconds=120):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def serves(registry, name) -> bool:
    try:
        return registry.resolve(spec(name=name)).version > 0
    except ServingError:  # not added, or added and not loaded yet
        return False


def test_watch_config_file_picks_up_a_change_and_keeps_the_config_when_the_file_breaks(
        model_base, tmp_path, monkeypatch, caplog):
    from serving import config_reload

    base = two_models(model_base, tmp_path)
    path = tmp_path / "models.config"
    entry = 'config {{ name: "{0}" base_path: "{1}/{0}" model_platform: "tensorflow" }}'
    write_config_file(path, f"model_config_list {{ {entry.format('pets', base)} }}")
    registry = ModelRegistry(parse_config_file(str(path)), poll_seconds=0)
    registry.start()
    reads = []
    real_parse = config_reload.parse_config_file
    monkeypatch.setattr(config_reload, "parse_config_file", lambda p: reads.append(p) or real_parse(p))
    registry.watch_config_file(str(path), 0.05)
    write_config_file(path, f"model_config_list {{ {entry.format('pets', base)} {entry.format('dogs', base)} }}")
    wait_for(lambda: serves(registry, "dogs"), "the watcher to add dogs")
    with caplog.at_level(logging.ERROR, logger="serving"):
        write_config_file(path, "model_config_list { config { nme: 'typo' } }")
        seen = len(reads)
        wait_for(lambda: len(reads) > seen + 3, "a few polls of the broken file")
    registry.stop()
    errors = [r.getMessage() for r in caplog.records if "Failed to read ModelServerConfig file" in r.getMessage()]
    assert len(errors) == 1 and "not a valid ModelServerConfig" in errors[0], "one line per broken streak"
    assert registry.model_names() == ["dogs", "pets"] and registry.resolve(spec(name="dogs")).version == 1


def test_on_event_reports_each_load_attempt_and_unload_and_its_failures_break_nothing(model_base, tmp_path):
    base = tmp_path / "models"
    shutil.copytree(model_base / "pets" / "1", base / "pets" / "1")
    events = []

    def on_event(*event):
        events.append(event)
        raise RuntimeError("a broken metrics hook")

    registry = ModelRegistry([model_config(base, "pets")], poll_seconds=0, max_num_load_retries=1,
                             load_retry_interval_seconds=0.0, on_event=on_event)
    registry.start()
    assert events == [("pets", 1, "load", "OK")] and registry.resolve(spec()).version == 1
    (base / "pets" / "2").mkdir()
    (base / "pets" / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
    registry.poll_once()
    failed = dict(registry.statuses(spec()))[2]
    assert events[1:] == [("pets", 2, "load", CODE_NAMES[failed.error_code])] * 2, "one per attempt"
    assert CODE_NAMES[failed.error_code] != "OK"
    copy_version(base, 1, 3)
    registry.poll_once()
    assert events[3:] == [("pets", 3, "load", "OK"), ("pets", 1, "unload", "OK")]
    assert registry.resolve(spec()).version == 3
    registry.stop()

"""Version policy, labels, failed loads and hot swap under load, like TF Serving's ServerCore (config reload:
test_config_reload.py)."""
import os
import shutil
import threading
import time

import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.config import model_server_config_pb2

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

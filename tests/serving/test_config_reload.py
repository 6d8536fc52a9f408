"""ServerCore::ReloadConfig and --model_config_file_poll_wait_seconds on the registry: models added,
removed and changed without a restart, bad configs refused with TF Serving's messages; load/unload events."""
import logging
import os
import shutil
import time

import pytest

from model_api.status import CODE_NAMES
from serving.config_reload import parse_config_file
from serving.errors import ServingError
from serving.registry import ModelRegistry, State
from tests.serving.test_registry import config, copy_version, count_loads, spec


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

"""The models the local server serves: configuration, polling, loading, version resolution.

Behaves like TF Serving's ServerCore with a file-system source:
- a model is `name` + `base_path`; its versions are the integer-named children of base_path
  (model_api/versions.py), polled every `--file_system_poll_wait_seconds`;
- `model_version_policy` picks what to serve: latest N (default 1), all, or specific;
- a new version is loaded, its warmup records replayed (assets.extra/tf_serving_warmup_requests),
  and only then made available; versions the policy no longer wants are unloaded after
  that (availability preserving), so requests never see a gap;
- a version that fails to load is reported (state END with its error) and retried up to
  `max_num_load_retries` times, `load_retry_interval_seconds` apart (TF Serving's
  --max_num_load_retries, default 5, and --load_retry_interval_micros, default 1 minute);
  the versions already serving keep serving;
- `version_labels` map names to available versions.
A request holds a reference to the servable it resolved, so an unload never fails a request
in flight: the old version is freed when its last request finishes.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from model_api import signature as sig
from model_api.versions import list_versions
from serving.errors import invalid_argument, not_found

log = logging.getLogger("serving")
State = get_model_status_pb2.ModelVersionStatus.State


@dataclass
class Servable:
    """One loaded version: the SavedModel's callable signatures and their SignatureDefs."""

    name: str
    version: int
    path: str
    signatures: dict          # signature name -> concrete function
    signature_defs: dict      # signature name -> meta_graph_pb2.SignatureDef

    @classmethod
    def load(cls, name: str, version: int, path: str) -> "Servable":
        import tensorflow as tf
        from tensorflow.python.tools import saved_model_utils

        loaded = tf.saved_model.load(path)
        meta = saved_model_utils.get_meta_graph_def(path, "serve")
        servable = cls(name=name, version=version, path=path, signatures=dict(loaded.signatures),
                       signature_defs=dict(meta.signature_def))
        servable._keepalive = loaded  # the concrete functions need their object alive
        return servable


@dataclass
class VersionStatus:
    state: int
    error_code: int = 0      # tensorflow.error.Code
    error_message: str = ""


@dataclass
class ModelEntry:
    config: model_server_config_pb2.ModelConfig
    servables: dict = field(default_factory=dict)   # version -> Servable (AVAILABLE)
    statuses: dict = field(default_factory=dict)    # version -> VersionStatus (all ever seen)
    failures: dict = field(default_factory=dict)  # version -> (attempts, monotonic time of the last)


def parse_config_file(path: str) -> list[model_server_config_pb2.ModelConfig]:
    """TF Serving's --model_config_file, parsed with TF Serving's own protos (text format)."""
    with open(path) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    if not config.HasField("model_config_list"):
        raise ValueError(f"{path}: only model_config_list is supported")
    return list(config.model_config_list.config)


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelConfig:
    """What --model_name/--model_base_path mean: one model, latest version."""
    return model_server_config_pb2.ModelConfig(name=name, base_path=base_path, model_platform="tensorflow")


def wanted_versions(config: model_server_config_pb2.ModelConfig, on_disk: list[int]) -> list[int]:
    policy = config.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return list(on_disk)
    if which == "specific":
        return sorted(v for v in on_disk if v in set(policy.specific.versions))
    count = policy.latest.num_versions if which == "latest" and policy.latest.num_versions else 1
    return list(on_disk[-count:])


class ModelRegistry:
    def __init__(self, configs: list, poll_seconds: float = 1.0, warmup: bool = True,
                 max_num_load_retries: int = 5, load_retry_interval_seconds: float = 60.0):
        self._lock = threading.RLock()
        self._models = {c.name: ModelEntry(config=c) for c in configs}
        self.poll_seconds = poll_seconds
        self.warmup = warmup
        self.max_num_load_retries = max_num_load_retries
        self.load_retry_interval_seconds = load_retry_interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.poll_once()
        if self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_forever, name="model-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the poller must survive anything on disk
                log.exception("polling the model directories failed")

    def poll_once(self) -> None:
        for name in list(self._models):
            self._sync_model(self._models[name])

    def _sync_model(self, entry: ModelEntry) -> None:
        config = entry.config
        on_disk = list_versions(config.base_path)
        wanted = wanted_versions(config, [v for v in on_disk if self._may_try(entry, v)])
        for version in wanted:
            if version not in entry.servables:
                self._load(entry, version)
        with self._lock:
            keep = set(wanted)
            # Availability preserving: only unload once something newer serves.
            if not any(v in entry.servables for v in keep):
                keep |= set(entry.servables)
            for version in [v for v in entry.servables if v not in keep]:
                del entry.servables[version]
                entry.statuses[version] = VersionStatus(State.END)
                log.info("unloaded %s version %d", config.name, version)

    def _may_try(self, entry: ModelEntry, version: int) -> bool:
        if version in entry.servables or version not in entry.failures:
            return True
        attempts, last = entry.failures[version]
        return attempts <= self.max_num_load_retries and \
            time.monotonic() - last >= self.load_retry_interval_seconds

    def _load(self, entry: ModelEntry, version: int) -> None:
        name = entry.config.name
        path = os.path.join(entry.config.base_path, str(version))
        with self._lock:
            entry.statuses[version] = VersionStatus(State.LOADING)
        started = time.perf_counter()
        try:
            servable = Servable.load(name, version, path)
            replayed = self._replay_warmup(servable) if self.warmup else 0
        except Exception as err:  # noqa: BLE001 - report it; keep serving what we have
            message = f"failed to load {name} version {version} from {path}: {str(err).splitlines()[0][:500]}"
            log.error(message)
            with self._lock:
                attempts = entry.failures.get(version, (0, 0.0))[0] + 1
                entry.failures[version] = (attempts, time.monotonic())
                entry.statuses[version] = VersionStatus(State.END, error_code=13, error_message=message)
            return
        with self._lock:
            entry.failures.pop(version, None)
            entry.servables[version] = servable
            entry.statuses[version] = VersionStatus(State.AVAILABLE)
        log.info("loaded %s version %d in %.1fs (%d warmup requests)", name, version,
                 time.perf_counter() - started, replayed)

    @staticmethod
    def _replay_warmup(servable: Servable) -> int:
        """TF Serving's SavedModel warmup: run every PredictionLog's request before serving."""
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        from serving.predict import run_predict

        path = os.path.join(servable.path, sig.WARMUP_FILE)
        if not os.path.exists(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path):
            log_entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if log_entry.HasField("predict_log"):
                run_predict(servable, log_entry.predict_log.request)
                count += 1
        return count

    # --- resolution -----------------------------------------------------------------------
    def model_names(self) -> list[str]:
        return sorted(self._models)

    def resolve(self, model_spec) -> Servable:
        """ModelSpec (name + version | version_label | latest) -> Servable, TF Serving's errors."""
        name = model_spec.name
        with self._lock:
            entry = self._models.get(name)
            which = model_spec.WhichOneof("version_choice")
            if which == "version":
                version = model_spec.version.value
                servable = entry.servables.get(version) if entry else None
                if servable is None:
                    raise not_found(f"Servable not found for request: Specific({name}, {version})")
                return servable
            if which == "version_label":
                label = model_spec.version_label
                version = entry.config.version_labels.get(label) if entry else None
                if version is None:
                    raise invalid_argument(f"Unrecognized servable version label: {label}")
                servable = entry.servables.get(version)
                if servable is None:
                    raise not_found(f"Servable not found for request: Specific({name}, {version})")
                return servable
            if not entry or not entry.servables:
                raise not_found(f"Servable not found for request: Latest({name})")
            return entry.servables[max(entry.servables)]

    def statuses(self, model_spec) -> list[tuple[int, VersionStatus]]:
        """GetModelStatus semantics (get_model_status_impl.cc)."""
        name = model_spec.name
        with self._lock:
            entry = self._models.get(name)
            which = model_spec.WhichOneof("version_choice")
            if which == "version_label":
                version = entry.config.version_labels.get(model_spec.version_label) if entry else None
                if version is None:
                    raise invalid_argument(f"Unrecognized servable version label: {model_spec.version_label}")
                which, wanted = "version", version
            elif which == "version":
                wanted = model_spec.version.value
            if which == "version":
                status = entry.statuses.get(wanted) if entry else None
                if status is None:
                    raise not_found(f"Could not find version {wanted} of model {name}")
                return [(wanted, status)]
            if not entry or not entry.statuses:
                raise not_found(f"Could not find any versions of model {name}")
            return sorted(entry.statuses.items())


"""The models the local server serves, as TF Serving's ServerCore with a file-system source does (server_core.cc,
aspired_versions_manager.cc): polling, loading with retries and warmup, unloading, labels, lookups (docs/serving.md)."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from model_api.session_bundle import BundleError
from model_api.status import CODE_NAMES, code_number
from model_api.versions import ListingError, VersionListing, join, scan_versions
from serving.batching import BatchingOptions, BatchScheduler
from serving.config_reload import ConfigFileWatcher, ConfigReloading, unavailable_message
from serving.errors import ServingError, invalid_argument, not_found
from serving.servable import Servable
from serving.version_policy import versions_to_unload, wanted_versions
from serving.warmup import replay_warmup

log = logging.getLogger("serving")
State = get_model_status_pb2.ModelVersionStatus.State


class StartupError(Exception):
    """The models cannot be served as configured (tensorflow_model_server exits: "Failed to start server")."""


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
    failed: set = field(default_factory=set)        # aspired versions whose load failed for good
    listing_problem: str | None = None              # why base_path cannot be listed (logged once)
    ignored_children: dict = field(default_factory=dict)  # duplicate version names ignored (logged once)


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelConfig:
    """What --model_name/--model_base_path mean: one model, latest version."""
    return model_server_config_pb2.ModelConfig(name=name, base_path=base_path, model_platform="tensorflow")


def _code_number(err: BaseException) -> tuple[int, str]:
    """(tensorflow.error.Code, message) a failed load reports, from the error that failed it."""
    if isinstance(err, BundleError):
        name, message = err.code, str(err)
    elif isinstance(err, ServingError):
        name, message = err.code.name, err.message
    else:
        name, message = "UNKNOWN", f"{type(err).__name__}: {err}"
    return code_number(name), message.splitlines()[0][:1000] if message else ""


class ModelRegistry(ConfigReloading):
    def __init__(self, configs: list, poll_seconds: float = 1.0, warmup: bool = True,
                 max_num_load_retries: int = 5, load_retry_interval_seconds: float = 60.0,
                 batching: BatchingOptions | None = None, allow_version_labels_for_unavailable_models: bool = False,
                 on_event: Callable[[str, int, str, str], None] | None = None):
        self._lock = threading.RLock()       # guards the dicts requests read
        self._sync_lock = threading.RLock()  # one change of the models at a time: poller, reload_config
        self._models = {c.name: ModelEntry(config=c) for c in configs}
        self._retired: dict[str, ModelEntry] = {}  # removed models: GetModelStatus still reports END
        self._on_event = on_event
        self._watcher: ConfigFileWatcher | None = None
        self.poll_seconds = poll_seconds
        self.warmup = warmup
        self.max_num_load_retries = max_num_load_retries
        self.load_retry_interval_seconds = load_retry_interval_seconds
        self.allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self.scheduler = BatchScheduler(batching) if batching is not None else None
        self._stopping = False  # a plain flag, polled: see stop_waiting
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Load every model's aspired versions and wait until each serves one (or fail with
        StartupError, like ServerCore::WaitUntilModelsAvailable), check the labels, then poll."""
        self.poll_once()
        self._wait_until_models_available()
        self._check_labels()
        if self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_forever, name="model-poller", daemon=True)
            self._thread.start()

    def stop_waiting(self) -> None:
        """A start() still waiting for versions gives up, polling and load retries end. Safe from a
        signal handler: it only sets a flag, which every wait here polls (_pause). Event.set() would
        not be: a handler runs in the main thread, which may be inside Event.wait() holding the
        Event's lock, and set() would then wait for that lock forever."""
        self._stopping = True

    def _pause(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking within 0.1 s of a stop; True if stopping."""
        deadline = time.monotonic() + seconds
        while not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, 0.1))
        return True

    def stop(self) -> None:
        self._stopping = True
        for thread in (self._thread, self._watcher.thread if self._watcher else None):
            if thread is not None and thread.is_alive():
                thread.join(timeout=30)
        if self.scheduler is not None:
            self.scheduler.stop()

    def _wait_until_models_available(self) -> None:
        announced = set()
        while True:
            with self._lock:
                waiting = [e for e in self._models.values() if not e.servables and not e.failed]
                failed = [e for e in self._models.values() if not e.servables and e.failed]
            if failed:
                raise StartupError(unavailable_message(failed))
            if not waiting:
                return
            for entry in waiting:
                if entry.config.name not in announced:
                    announced.add(entry.config.name)
                    log.warning("no version of %s under %s yet: waiting for one", entry.config.name,
                                entry.config.base_path)
            if self._pause(max(self.poll_seconds, 0.2)):
                raise StartupError("stopped while waiting for the models to become available")
            self.poll_once()

    def _check_labels(self) -> None:
        """ServerCore::UpdateModelVersionLabelMap at start."""
        if self.allow_unavailable_labels:
            return
        with self._lock:
            for entry in self._models.values():
                for label, version in sorted(entry.config.version_labels.items()):
                    if version not in entry.servables:
                        raise StartupError(f"Request to assign label to version {version} of model "
                                           f"{entry.config.name}, which is not currently available for inference")

    def _poll_forever(self) -> None:
        while not self._pause(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the poller must survive anything on disk
                log.exception("polling the model directories failed")

    def poll_once(self) -> None:
        with self._sync_lock:
            for entry in list(self._models.values()):
                self._sync_model(entry)

    def _sync_model(self, entry: ModelEntry) -> None:
        listing = self._list(entry)
        if listing is None:
            return  # nothing can be concluded: keep serving what is loaded
        aspired = wanted_versions(entry.config, listing.versions())
        with self._lock:
            entry.failed &= set(aspired)  # TF Serving stops managing a failed version once unaspired
        self._unload(entry, versions_to_unload(set(entry.servables), set(aspired)))
        for version in sorted(aspired, reverse=True):  # the policy loads the highest new version first
            if version not in entry.servables and version not in entry.failed and not self._stopping:
                self._load(entry, version, join(entry.config.base_path, listing.children[version]))
        self._unload(entry, versions_to_unload(set(entry.servables), set(aspired)))

    def _list(self, entry: ModelEntry) -> VersionListing | None:
        """The model's versions, or None when its base path cannot be listed. TF Serving logs that
        at every poll (file_system_storage_path_source.cc); we log once per failure streak."""
        name = entry.config.name
        try:
            listing = scan_versions(entry.config.base_path)
        except ListingError as err:
            if entry.listing_problem is None:
                log.warning("model %s: %s; %s until it can be listed", name, err,
                            f"its {len(entry.servables)} loaded version(s) keep serving" if entry.servables
                            else "no version loads")
            entry.listing_problem = str(err)
            return None
        if entry.listing_problem is not None:
            log.info("model %s: %s can be listed again", name, entry.config.base_path)
            entry.listing_problem = None
        if listing.ignored != entry.ignored_children:
            for ignored, used in sorted(listing.ignored.items()):  # IndexChildrenByVersion's warning
                log.warning("Duplicate version directories detected. Version %d will be loaded from %s, %s will be "
                            "ignored.", int(used), used, ignored)
            entry.ignored_children = listing.ignored
        return listing

    def _unload(self, entry: ModelEntry, versions: list[int]) -> None:
        for version in versions:
            with self._lock:
                servable = entry.servables.pop(version)
                entry.statuses[version] = VersionStatus(State.END)
            servable.unload()
            log.info("unloaded %s version %d", entry.config.name, version)
            self._emit(entry.config.name, version, "unload", "OK")

    def _emit(self, name: str, version: int, event: str, code_name: str) -> None:
        """on_event(name, version, event, code name); its failures are logged, never raised."""
        if self._on_event is None:
            return
        try:
            self._on_event(name, version, event, code_name)
        except Exception:  # noqa: BLE001 - a metrics hook must not break loading
            log.exception("on_event(%s, %d, %s, %s) failed", name, version, event, code_name)

    def _load(self, entry: ModelEntry, version: int, path: str) -> None:
        """One load with TF Serving's retries (BasicManager + LoaderHarness: --max_num_load_retries
        more attempts after the first, --load_retry_interval_micros apart). `path` is the version's
        real child ("00001"), as AspireVersion keeps it."""
        name = entry.config.name
        with self._lock:
            entry.statuses[version] = VersionStatus(State.LOADING)
        started = time.perf_counter()
        for attempt in range(self.max_num_load_retries + 1):
            if attempt and self._pause(self.load_retry_interval_seconds):
                return
            try:
                servable = self._load_once(name, version, path)
                break
            except Exception as err:  # noqa: BLE001 - report it; keep serving what we have
                code, message = _code_number(err)
                log.error("failed to load %s version %d from %s (attempt %d of %d): %s", name, version, path,
                          attempt + 1, self.max_num_load_retries + 1, message)
                self._emit(name, version, "load", CODE_NAMES[code])
        else:
            with self._lock:
                entry.failed.add(version)
                entry.statuses[version] = VersionStatus(
                    State.END, error_code=code, error_message=f"failed to load {name} version {version}: {message}")
            return
        with self._lock:
            entry.servables[version] = servable
            entry.statuses[version] = VersionStatus(State.AVAILABLE)
        log.info("loaded %s version %d from %s in %.1fs", name, version, path, time.perf_counter() - started)
        self._emit(name, version, "load", "OK")

    def _load_once(self, name: str, version: int, path: str) -> Servable:
        servable = Servable.load(name, version, path, self.scheduler)
        try:
            if self.warmup:
                log.info("%s version %d: %d warmup requests replayed", name, version, replay_warmup(servable))
        except BaseException:
            servable.unload()
            raise
        return servable

    def _add_model(self, config) -> None:
        """A model added by reload_config; one removed before keeps its versions' END statuses."""
        retired = self._retired.pop(config.name, None)
        with self._lock:
            self._models[config.name] = ModelEntry(config=config, statuses=retired.statuses if retired else {})

    def _remove_model(self, name: str) -> None:
        """The source unaspires every version of a model dropped from the config: all unload."""
        with self._lock:
            entry = self._models.pop(name)
        self._unload(entry, sorted(entry.servables))
        entry.failed.clear()
        self._retired[name] = entry
        log.info("model %s removed from the config", name)

    # --- resolution -----------------------------------------------------------------------
    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def resolve(self, model_spec) -> Servable:
        """ModelSpec (name + version | version_label | latest) -> Servable, TF Serving's errors."""
        name = model_spec.name
        with self._lock:
            entry = self._models.get(name)
            which = model_spec.WhichOneof("version_choice")
            if which == "version_label":
                label = model_spec.version_label
                version = entry.config.version_labels.get(label) if entry else None
                if version is None:
                    raise invalid_argument(f"Unrecognized servable version label: {label}")
                which = "version"
            elif which == "version":
                version = model_spec.version.value
            if which == "version":
                servable = entry.servables.get(version) if entry else None
                if servable is None:
                    raise not_found(f"Servable not found for request: Specific({name}, {version})")
                return servable
            if not entry or not entry.servables:
                raise not_found(f"Servable not found for request: Latest({name})")
            return entry.servables[max(entry.servables)]

    def statuses(self, model_spec) -> list[tuple[int, VersionStatus]]:
        """GetModelStatus semantics (model_servers/get_model_status_impl.cc): a version number gives
        that version; anything else (no version, or a version_label, which GetModelStatus never
        reads: it checks only has_version()) gives every version, newest first, the order of
        ServableStateMonitor's VersionMap (core/servable_state_monitor.h, std::greater<Version>)."""
        name = model_spec.name
        with self._lock:
            entry = self._models.get(name) or self._retired.get(name)
            if model_spec.WhichOneof("version_choice") == "version":
                wanted = model_spec.version.value
                status = entry.statuses.get(wanted) if entry else None
                if status is None:
                    raise not_found(f"Could not find version {wanted} of model {name}")
                return [(wanted, status)]
            if not entry or not entry.statuses:
                raise not_found(f"Could not find any versions of model {name}")
            return sorted(entry.statuses.items(), reverse=True)

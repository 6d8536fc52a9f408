"""The model config list: reading --model_config_file, checking a new list before it replaces the
current one (ServerCore::ReloadConfig), and re-reading the file every poll (server.cc)."""
from __future__ import annotations

import logging
import threading
from typing import Callable

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from model_api.status import CODE_NAMES
from model_api.versions import is_url
from serving.errors import ServingError, failed_precondition, invalid_argument, with_code

log = logging.getLogger("serving")
SUPPORTED_PLATFORMS = ("tensorflow",)


def parse_config_file(path: str) -> list[model_server_config_pb2.ModelConfig]:
    """TF Serving's --model_config_file, parsed with TF Serving's own protos (text format)."""
    with open(path) as f:
        try:
            config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
        except text_format.ParseError as err:
            raise ValueError(f"{path}: not a valid ModelServerConfig: {err}") from None
    if not config.HasField("model_config_list"):
        raise ValueError(f"{path}: only model_config_list is supported")
    return list(config.model_config_list.config)


def unavailable_message(failed: list) -> str:
    """ServerCore::WaitUntilModelsAvailable's message, braces and all (`failed`: model entries)."""
    details = "".join(f"{{{{name: {e.config.name} version: {v}}} due to error: "
                      f"{CODE_NAMES[e.statuses[v].error_code]}: {e.statuses[v].error_message}}}, "
                      for e in failed for v in sorted(e.failed))
    return f"{len(failed)} model(s) did not become available: {{{details}}}"


def _is_relative(base_path: str) -> bool:
    """UriIsRelativePath (server_core.cc): no scheme, no host, not an absolute path."""
    return not is_url(base_path) and not base_path.startswith("/")


def platform_of(config) -> str:
    """GetPlatform (server_core.cc): model_platform, or the deprecated model_type; their errors."""
    name = config.name
    if config.model_type:
        if config.model_platform:
            raise invalid_argument("Illegal setting both ModelServerConfig::model_type (deprecated) and "
                                   f"ModelServerConfig::model_platform, model name is {name}")
        if config.model_type != model_server_config_pb2.TENSORFLOW:
            raise invalid_argument(f"ModelServerConfig::model_type choice {config.model_type} not supported.")
        return "tensorflow"
    if not config.model_platform:
        raise invalid_argument("Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                               f"ModelServerConfig::model_platform, model name is {name}")
    return config.model_platform


def _served_platform(config) -> str:
    """The platform a model already being served runs as. The local server started models whose
    config named none (TF Serving would have refused them); they run as tensorflow."""
    try:
        return platform_of(config)
    except ServingError:
        return "tensorflow"


def validate_config_list(configs: list, current: dict) -> None:
    """ValidateModelConfigList, ValidateNoModelsChangePlatforms and CreateStoragePathRoutes
    (server_core.cc), all before anything changes; `current` is name -> the served config."""
    seen = set()
    for config in configs:
        if config.name in seen:
            raise invalid_argument(f"Illegal to list model {config.name} multiple times in config list")
        seen.add(config.name)
    for config in configs:
        if _is_relative(config.base_path):
            raise invalid_argument(f"Expected model {config.name} to have an absolute path or URI; "
                                   f"got base_path()={config.base_path}")
    for config in configs:
        platform = platform_of(config)
        old = current.get(config.name)
        if old is not None and _served_platform(old) != platform:
            raise invalid_argument(f"Illegal to change a model's platform. For model {config.name} platform was "
                                   f"{_served_platform(old)} and new platform requested is {platform}")
    for config in configs:
        if platform_of(config) not in SUPPORTED_PLATFORMS:
            raise invalid_argument(f"Model {config.name} requests unsupported platform {platform_of(config)}")


def check_version_labels(configs: list, current: dict, available: dict, allow_unavailable: bool) -> None:
    """UpdateModelVersionLabelMap (server_core.cc): a label must name a version available now.
    With --allow_version_labels_for_unavailable_models a label may name any version unless it
    already exists and points elsewhere (a served label only moves to an available version)."""
    for config in configs:
        old = current.get(config.name)
        for label, version in sorted(config.version_labels.items()):
            existing = old.version_labels.get(label) if old is not None else None
            if allow_unavailable and existing in (None, version):
                continue
            if version not in available.get(config.name, ()):
                raise failed_precondition(f"Request to assign label to version {version} of model {config.name}, "
                                          "which is not currently available for inference")


def same_configs(a: list, b: list) -> bool:
    """ServerCore::ReloadConfig's is_same_config: equal messages, in order."""
    return len(a) == len(b) and all(x == y for x, y in zip(a, b))


class ConfigFileWatcher:
    """Server::PollFilesystemAndReloadConfig on a daemon thread: a file that cannot be read or
    parsed, or a config that is refused, is logged and the current config stays. TF Serving logs
    the error at every poll; we log it once until the problem changes or goes away."""

    def __init__(self, path: str, poll_seconds: float, parse: Callable, current: Callable, reload: Callable,
                 pause: Callable[[float], bool]):
        self.path = path
        self.poll_seconds = poll_seconds
        self._parse, self._current, self._reload, self._pause = parse, current, reload, pause
        self._problem: str | None = None
        self.thread = threading.Thread(target=self._run, name="model-config-poller", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self._pause(self.poll_seconds):
            try:
                self.check_once()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad reload
                log.exception("reloading %s failed", self.path)

    def check_once(self) -> None:
        try:
            configs = self._parse(self.path)
        except (OSError, ValueError) as err:
            self._report(f"Failed to read ModelServerConfig file: {err}; keeping the current model config")
            return
        if same_configs(configs, self._current()):
            self._problem = None
            return
        try:
            self._reload(configs)
        except ServingError as err:
            self._report(f"PollFilesystemAndReloadConfig failed to ReloadConfig: {err.message}")
            return
        self._problem = None
        log.info("reloaded the model config from %s", self.path)

    def _report(self, problem: str) -> None:
        if problem != self._problem:
            log.error("%s", problem)
        self._problem = problem


class ConfigReloading:
    """ModelRegistry's reload half. The registry provides _models (name -> entry with config,
    servables, failed), _lock, _sync_lock, _stopping, _pause, _sync_model, _add_model,
    _remove_model and allow_unavailable_labels."""

    def reload_config(self, configs: list) -> None:
        """Serve `configs` from now on: new models are added and loaded before this returns, removed
        ones unloaded, changed policies and labels applied; unchanged models are not touched.
        An invalid list raises ServingError with TF Serving's code and message and changes nothing;
        a new model whose versions fail to load raises UNKNOWN with WaitUntilModelsAvailable's
        message, the rest of the config staying applied, as in TF Serving."""
        configs = [type(c).FromString(c.SerializeToString()) for c in configs]  # ours, not the caller's
        with self._sync_lock:
            current = {name: entry.config for name, entry in self._models.items()}
            if same_configs(configs, list(current.values())):
                return
            validate_config_list(configs, current)
            with self._lock:
                available = {name: set(entry.servables) for name, entry in self._models.items()}
            check_version_labels(configs, current, available, self.allow_unavailable_labels)
            added, changed = self._apply_configs(configs)
            for name in added + changed:
                if not self._stopping:
                    self._sync_model(self._models[name])
            failed = [self._models[n] for n in added if self._models[n].failed and not self._models[n].servables]
        log.info("model config reloaded: %d model(s), added %s, changed %s", len(configs), added, changed)
        if failed:
            raise with_code("UNKNOWN", unavailable_message(failed))

    def _apply_configs(self, configs: list) -> tuple[list, list]:
        """Swap in the new list; (added names, changed names). Removed models are unloaded now."""
        wanted = {c.name for c in configs}
        for name in [n for n in self._models if n not in wanted]:
            self._remove_model(name)
        added, changed = [], []
        for config in configs:
            entry = self._models.get(config.name)
            if entry is None:
                self._add_model(config)
                added.append(config.name)
            elif entry.config != config:
                with self._lock:
                    entry.config = config  # resolve() reads labels from it: one swap, no half state
                changed.append(config.name)
        with self._lock:  # the list's order, so the next same_configs() sees the list it was given
            self._models = {config.name: self._models[config.name] for config in configs}
        return added, changed

    def watch_config_file(self, path: str, poll_seconds: float) -> None:
        """--model_config_file_poll_wait_seconds: re-read `path` every poll_seconds on a daemon
        thread and reload_config() what parses; stop() ends it."""
        self._watcher = ConfigFileWatcher(path, poll_seconds, parse=parse_config_file, current=self._configs,
                                          reload=self.reload_config, pause=self._pause)
        self._watcher.start()

    def _configs(self) -> list:
        with self._lock:
            return [entry.config for entry in self._models.values()]

"""The local model server: the registry plus the gRPC and REST front ends, started and
stopped together. Used by `model-server` and, in-process, by the tests."""
from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from aiohttp import web

from serving.config_protos import SSLConfig, parse_text_file
from serving.grpc_server import build_grpc_server, health_servicer
from serving.monitoring import ServingMetrics
from serving.registry import ModelRegistry
from serving.rest_server import RestApi, build_app

log = logging.getLogger("serving")


def read_ssl_config(path: str):
    """--ssl_config_file: TF Serving's SSLConfig in protobuf text format (server.cc
    BuildServerCredentials reads it with ParseProtoTextFile)."""
    return parse_text_file(path, SSLConfig)


def grpc_credentials(ssl_config) -> grpc.ServerCredentials:
    """server.cc BuildServerCredentials: client_verify requires and verifies a client
    certificate; custom_ca is the root it is verified against."""
    return grpc.ssl_server_credentials(
        [(ssl_config.server_key.encode(), ssl_config.server_cert.encode())],
        root_certificates=ssl_config.custom_ca.encode() if ssl_config.custom_ca else None,
        require_client_auth=ssl_config.client_verify)


class LocalServer:
    def __init__(self, registry: ModelRegistry, host: str = "127.0.0.1", grpc_port: int = 8500,
                 rest_port: int = 8501, max_request_bytes: int = 64 << 20, threads: int = 8,
                 tls=None, grace_seconds: float = 30.0, rest_threads: int | None = None,
                 metrics: ServingMetrics | None = None, metrics_path: str | None = None,
                 grpc_health: bool = False, rest_max_in_flight: int | None = None, rest_timeout_ms: int = 30000):
        """`tls`: an SSLConfig message (read_ssl_config) for gRPC TLS, or None. `metrics`: give the one
        whose on_model_event the registry reports to; `metrics_path` serves it on the REST port.
        `rest_max_in_flight` defaults to the REST threads (no queue, as gRPC)."""
        if not grpc_port:
            # server.cc Server::BuildAndStart; there is no --grpc_socket_path here.
            raise ValueError("At least one of server_options.grpc_port or server_options.grpc_socket_path "
                             "must be set.")
        self.registry = registry
        self.host = host
        self.grpc_port = grpc_port
        self.rest_port = rest_port
        self.max_request_bytes = max_request_bytes
        self.threads = threads
        self.tls = tls
        self.grace_seconds = grace_seconds
        self.metrics = metrics or ServingMetrics()
        self.metrics_path = metrics_path
        self.health = health_servicer() if grpc_health else None
        rest_threads = rest_threads or threads
        self.rest_max_in_flight = rest_max_in_flight or rest_threads
        self.rest_timeout_ms = rest_timeout_ms
        self._grpc: grpc.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rest_thread: threading.Thread | None = None
        self._executor = ThreadPoolExecutor(max_workers=rest_threads, thread_name_prefix="rest")

    def start(self) -> "LocalServer":
        """Load the models, then bind and start both front ends; if anything fails, everything
        started so far is stopped before the error is raised (no gRPC left serving alone)."""
        try:
            self.registry.start()  # raises StartupError when a model cannot be served
            self._start_frontends()
        except BaseException:
            self._stop_now()
            raise
        log.info("serving %s: gRPC on %s:%s, REST on %s", ", ".join(self.registry.model_names()), self.host,
                 self.grpc_port, f"{self.host}:{self.rest_port}" if self.rest_port else "off")
        return self

    def _start_frontends(self) -> None:
        if self.rest_port == self.grpc_port:  # server.cc: logged, and REST is skipped
            log.error("server_options.http_port cannot be same as grpc_port. Please use a different port for "
                      "HTTP/REST API. Skipped exporting HTTP/REST API.")
            self.rest_port = 0
        # Both ports are bound before either serves (REST first: a built, never started gRPC server
        # keeps its port). 0 disables REST, as --rest_api_port=0 does in TF Serving.
        sock = self._bind_rest() if self.rest_port else None
        try:
            credentials = grpc_credentials(self.tls) if self.tls else None
            self._grpc, self.grpc_port = build_grpc_server(
                self.registry, f"{self.host}:{self.grpc_port}", self.max_request_bytes, self.threads, credentials,
                metrics=self.metrics, health_service=self.health)
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        self._grpc.start()
        if sock is not None:
            self._start_rest(sock)

    def _bind_rest(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.rest_port))
        except OSError as err:
            sock.close()
            raise OSError(f"cannot bind REST to {self.host}:{self.rest_port}: {err.strerror or err}") from None
        self.rest_port = sock.getsockname()[1]
        return sock

    def _rest_app(self) -> web.Application:
        api = RestApi(self.registry, self._executor, self.max_request_bytes, self.metrics,
                      max_in_flight=self.rest_max_in_flight, timeout_ms=self.rest_timeout_ms)
        return build_app(api, self.metrics_path)

    def _start_rest(self, sock: socket.socket) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            runner = web.AppRunner(self._rest_app(), access_log=None, shutdown_timeout=self.grace_seconds)
            try:
                loop.run_until_complete(runner.setup())
                loop.run_until_complete(web.SockSite(runner, sock).start())
            except BaseException as err:  # noqa: BLE001
                failure.append(err)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())  # waits for in-flight requests, up to the grace
            loop.close()

        self._rest_thread = threading.Thread(target=serve, name="rest", daemon=True)
        self._rest_thread.start()
        ready.wait()
        if failure:
            raise failure[0]

    def stop(self) -> None:
        """Graceful: both front ends stop accepting and let in-flight requests finish, at the same
        time, within one grace period; then the registry stops."""
        if self.health is not None:
            self.health.enter_graceful_shutdown()  # every service NOT_SERVING, as gRPC's Shutdown does
        grpc_done = self._grpc.stop(self.grace_seconds) if self._grpc is not None else None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        deadline = time.monotonic() + self.grace_seconds + 5
        if grpc_done is not None:
            grpc_done.wait(timeout=self.grace_seconds + 5)
        if self._rest_thread is not None:
            self._rest_thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._executor.shutdown(wait=True)
        self.registry.stop()

    def _stop_now(self) -> None:
        """After a failed start: nothing was served yet, so no grace."""
        if self._grpc is not None:
            self._grpc.stop(None)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._executor.shutdown(wait=False)
        self.registry.stop()

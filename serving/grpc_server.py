"""gRPC: TF Serving's PredictionService (Predict, GetModelMetadata), ModelService (GetModelStatus,
HandleReloadConfigRequest) and, when enabled, the standard health service, with TF Serving's limits."""
from __future__ import annotations

import logging
import time
import uuid
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc, prediction_service_pb2_grpc

from model_api.status import code_number
from serving import handlers as ops
from serving.errors import ServingError, grpc_message, internal_error_message, invalid_argument
from serving.monitoring import ServingMetrics
from serving.registry import ModelRegistry

log = logging.getLogger("serving")
# server.cc marks these two (short) names SERVING; the overall status "" is SERVING by default in
# gRPC's DefaultHealthCheckService, and every name turns NOT_SERVING when the server shuts down.
HEALTH_SERVICE_NAMES = ("", "ModelService", "PredictionService")


class _Failed(Exception):
    """A request failed with (code, message); carries them to the metrics and to abort()."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _run(context, operation, *args):
    """The operation's answer, or _Failed with TF Serving's code and an uncut message."""
    remaining = context.time_remaining()
    if not context.is_active() or (remaining is not None and remaining <= 0):
        # The caller gave up while the request waited for a thread: do not run it.
        raise _Failed(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    try:
        return operation(*args)
    except ServingError as err:
        raise _Failed(err.code, err.message) from None
    except Exception:  # noqa: BLE001 - never let one request take the server down
        incident = uuid.uuid4().hex[:12]
        log.exception("internal error (incident %s)", incident)
        raise _Failed(grpc.StatusCode.INTERNAL, internal_error_message(incident)) from None


def _call(context, operation, *args):
    try:
        return _run(context, operation, *args)
    except _Failed as failed:
        context.abort(failed.code, grpc_message(failed.message))


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, registry: ModelRegistry, metrics: ServingMetrics):
        self.registry = registry
        self.metrics = metrics

    def Predict(self, request, context):
        # prediction_service_impl.cc: Predict is counted (and timed when OK), GetModelMetadata is not.
        started = time.perf_counter()
        version, status = request.model_spec.version.value, "OK"
        try:
            response = _run(context, ops.predict, self.registry, request)
            version = response.model_spec.version.value
            return response
        except _Failed as failed:
            status = failed.code.name
            context.abort(failed.code, grpc_message(failed.message))
        finally:
            self.metrics.record_request(request.model_spec.name, version, "Predict", "GRPC", status, started)

    def GetModelMetadata(self, request, context):
        return _call(context, ops.model_metadata, self.registry, request)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry, metrics: ServingMetrics):
        self.registry = registry
        self.metrics = metrics

    def GetModelStatus(self, request, context):
        return _call(context, ops.model_status, self.registry, request)

    def HandleReloadConfigRequest(self, request, context):
        """model_service_impl.cc: only a model_config_list; the status goes into the response and
        is the call's status; each metric named in the request reports its increase."""
        before = {name: self.metrics.counter_value(name) for name in request.metric_names}
        try:
            _run(context, self._reload, request.config)
            code, message = grpc.StatusCode.OK, ""
        except _Failed as failed:
            code, message = failed.code, failed.message
            log.error("ReloadConfig failed: %s", message)
        response = model_management_pb2.ReloadConfigResponse()
        for name, value in before.items():
            response.metric.add(name=name, int64_value_increase=self.metrics.counter_value(name) - value)
        response.status.error_code = code_number(code.name)
        response.status.error_message = message
        if code != grpc.StatusCode.OK:
            context.abort(code, grpc_message(message))
        return response

    def _reload(self, config) -> None:
        if config.WhichOneof("config") != "model_config_list":
            raise invalid_argument("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                                   "Only ModelConfigList is currently supported")
        configs = list(config.model_config_list.config)
        for index, entry in enumerate(configs):
            log.info("Config entry index: %d path: %s name: %s platform: %s", index, entry.base_path, entry.name,
                     entry.model_platform)
        self.registry.reload_config(configs)


def health_servicer() -> health.HealthServicer:
    servicer = health.HealthServicer()
    for name in HEALTH_SERVICE_NAMES:
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


def build_grpc_server(registry: ModelRegistry, address: str, max_message_bytes: int, threads: int = 8,
                      credentials: grpc.ServerCredentials | None = None, metrics: ServingMetrics | None = None,
                      health_service: health.HealthServicer | None = None) -> tuple[grpc.Server, int]:
    """A ready (not started) server and the port it bound. `threads` is --grpc_max_threads: as
    server.cc's ResourceQuota::SetMaxThreads, an RPC beyond it is refused at once with
    RESOURCE_EXHAUSTED instead of waiting in a queue (maximum_concurrent_rpcs)."""
    metrics = metrics or ServingMetrics()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        maximum_concurrent_rpcs=threads,
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.max_send_message_length", max_message_bytes),
                 ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(registry, metrics),
                                                                        server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(registry, metrics), server)
    if health_service is not None:
        health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:  # recent grpcio raises where older ones returned 0
        port = 0
    if port == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    return server, port

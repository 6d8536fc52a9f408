"""gRPC: TF Serving's PredictionService (Predict, GetModelMetadata) and ModelService
(GetModelStatus), on the service base classes from tensorflow-serving-api."""
from __future__ import annotations

import logging
from concurrent import futures

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving import handlers as ops
from serving.errors import ServingError
from serving.registry import ModelRegistry

log = logging.getLogger("serving")


def _call(context, operation, *args):
    try:
        return operation(*args)
    except ServingError as err:
        context.abort(err.code, err.message)
    except Exception as err:  # noqa: BLE001 - never let one request take the server down
        log.exception("internal error")
        context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}: {err}")


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def Predict(self, request, context):
        return _call(context, ops.predict, self.registry, request)

    def GetModelMetadata(self, request, context):
        return _call(context, ops.model_metadata, self.registry, request)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def GetModelStatus(self, request, context):
        return _call(context, ops.model_status, self.registry, request)


def build_grpc_server(registry: ModelRegistry, address: str, max_message_bytes: int, threads: int = 8,
                      credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, int]:
    """A started-ready (not started) server and the port it bound."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.max_send_message_length", max_message_bytes),
                 ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(registry), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(registry), server)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    return server, port

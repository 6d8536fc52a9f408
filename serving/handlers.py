"""The API handlers: Predict, GetModelMetadata and GetModelStatus on TF Serving's protos.

Both front ends call these: gRPC passes the protos through, REST converts its JSON to the
same PredictRequest first, exactly as TF Serving's HTTP handler does. They resolve the
ModelSpec in the registry and run the servable through predict_util (TF Serving's
model_servers/ handlers over servables/tensorflow/predict_util.cc).
"""
from __future__ import annotations

from google.protobuf import any_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from serving.errors import invalid_argument
from serving.predict_util import run_predict
from serving.registry import ModelRegistry


# The two refusals of a request's ModelSpec, before any lookup: "Missing ModelSpec" (predict_impl.cc,
# get_model_metadata_impl.cc, get_model_status_impl.cc) and an empty name (server_core.cc
# ServableRequestFromModelSpec, which GetServableHandle calls for Predict and GetModelMetadata).
MISSING_MODEL_SPEC = "Missing ModelSpec"
MODEL_SPEC_HAS_NO_NAME = "ModelSpec has no name specified."


def _require_model_spec(request) -> None:
    if not request.HasField("model_spec"):
        raise invalid_argument(MISSING_MODEL_SPEC)


def _resolve(registry: ModelRegistry, model_spec):
    """registry.resolve behind TF Serving's name check (GetServableHandle -> ServableRequestFromModelSpec)."""
    if not model_spec.name:
        raise invalid_argument(MODEL_SPEC_HAS_NO_NAME)
    return registry.resolve(model_spec)


def predict(registry: ModelRegistry, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    _require_model_spec(request)
    return run_predict(_resolve(registry, request.model_spec), request)


def model_metadata(registry: ModelRegistry,
                   request: get_model_metadata_pb2.GetModelMetadataRequest) -> get_model_metadata_pb2.GetModelMetadataResponse:
    _require_model_spec(request)  # get_model_metadata_impl.cc: before the metadata_field checks
    fields = list(request.metadata_field)
    for name in fields:
        if name != "signature_def":
            raise invalid_argument(f"Metadata field {name} is not supported")
    if not fields:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    servable = _resolve(registry, request.model_spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    # Every SignatureDef, __saved_model_init_op included, as servables/tensorflow/get_model_metadata_impl.cc
    # copies bundle->meta_graph_def.signature_def() whole.
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, definition in servable.signature_defs.items():
        signature_map.signature_def[name].CopyFrom(definition)
    packed = any_pb2.Any()
    packed.Pack(signature_map)
    response.metadata["signature_def"].CopyFrom(packed)
    return response


def model_status(registry: ModelRegistry,
                 request: get_model_status_pb2.GetModelStatusRequest) -> get_model_status_pb2.GetModelStatusResponse:
    # An empty name is looked up like any other (get_model_status_impl.cc has no name check):
    # NOT_FOUND "Could not find any versions of model ", as TF Serving answers.
    _require_model_spec(request)
    response = get_model_status_pb2.GetModelStatusResponse()
    for version, status in registry.statuses(request.model_spec):
        entry = response.model_version_status.add(version=version, state=status.state)
        entry.status.error_code = status.error_code
        entry.status.error_message = status.error_message
    return response


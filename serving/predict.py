"""Predict, GetModelMetadata and GetModelStatus on TF Serving's request/response protos.

Both front ends call these: gRPC passes the protos through, REST converts its JSON to the
same PredictRequest first, exactly as TF Serving's HTTP handler does. Validation and
messages follow tensorflow_serving/servables/tensorflow/predict_util.cc.
"""
from __future__ import annotations

import tensorflow as tf
from google.protobuf import any_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from model_api import signature as sig
from serving.errors import failed_precondition, from_tf_error, invalid_argument
from serving.registry import ModelRegistry, Servable


def signature_name_or_default(name: str) -> str:
    return name or sig.SERVING_DEFAULT


def predict(registry: ModelRegistry, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    servable = registry.resolve(request.model_spec)
    return run_predict(servable, request)


def run_predict(servable: Servable, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    signature_name = signature_name_or_default(request.model_spec.signature_name)
    signature_def = servable.signature_defs.get(signature_name)
    function = servable.signatures.get(signature_name)
    if signature_def is None or function is None:
        raise failed_precondition(f'Serving signature key "{signature_name}" not found.')
    inputs = _validated_inputs(request, signature_def, servable.name)
    output_names = list(request.output_filter) or sorted(signature_def.outputs)
    for alias in output_names:
        if alias not in signature_def.outputs:
            raise invalid_argument(f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                                   f"the set {{{','.join(sorted(signature_def.outputs))}}}.")
    try:
        outputs = function(**inputs)
    except tf.errors.OpError as err:
        raise from_tf_error(err) from None
    except (TypeError, ValueError) as err:  # shape or structure rejected before running
        raise invalid_argument(str(err).splitlines()[0]) from None
    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature_name
    for alias in output_names:
        response.outputs[alias].CopyFrom(tf.make_tensor_proto(outputs[alias].numpy()))
    return response


def _validated_inputs(request, signature_def, model_name: str) -> dict:
    sent, expected = set(request.inputs), set(signature_def.inputs)
    for alias in sorted(sent - expected):
        raise invalid_argument(f"input tensor alias not found in signature: {alias}. Inputs expected to be in the "
                               f"set {{{','.join(sorted(expected))}}}.")
    if sent != expected:
        raise invalid_argument(f"Request inputs do not match required inputs for model `{model_name}`. "
                               f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")
    inputs = {}
    for position, alias in enumerate(sorted(expected)):
        proto = request.inputs[alias]
        wanted = tf.dtypes.as_dtype(signature_def.inputs[alias].dtype)
        if proto.dtype != wanted.as_datatype_enum:
            got = tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else "an unset dtype"
            raise invalid_argument(f"Expects arg[{position}] ({alias}) to be {wanted.name} but {got} is provided")
        try:
            value = tf.make_ndarray(proto)
        except Exception:  # noqa: BLE001 - malformed TensorProto
            raise invalid_argument(f"tensor parsing error: {alias}") from None
        shape = [d.size for d in signature_def.inputs[alias].tensor_shape.dim]
        if not signature_def.inputs[alias].tensor_shape.unknown_rank and (
                len(shape) != value.ndim or any(s not in (-1, v) for s, v in zip(shape, value.shape))):
            raise invalid_argument(f"input {alias} has shape {list(value.shape)}; the signature expects "
                                   f"{[s if s >= 0 else None for s in shape]}")
        inputs[alias] = tf.constant(value, dtype=wanted)
    return inputs


def model_metadata(registry: ModelRegistry,
                   request: get_model_metadata_pb2.GetModelMetadataRequest) -> get_model_metadata_pb2.GetModelMetadataResponse:
    fields = list(request.metadata_field)
    for name in fields:
        if name != "signature_def":
            raise invalid_argument(f"Metadata field {name} is not supported")
    if not fields:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    servable = registry.resolve(request.model_spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, definition in servable.signature_defs.items():
        if name == "__saved_model_init_op":
            continue
        signature_map.signature_def[name].CopyFrom(definition)
    packed = any_pb2.Any()
    packed.Pack(signature_map)
    response.metadata["signature_def"].CopyFrom(packed)
    return response


def model_status(registry: ModelRegistry,
                 request: get_model_status_pb2.GetModelStatusRequest) -> get_model_status_pb2.GetModelStatusResponse:
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    response = get_model_status_pb2.GetModelStatusResponse()
    for version, status in registry.statuses(request.model_spec):
        entry = response.model_version_status.add(version=version, state=status.state)
        entry.status.error_code = status.error_code
        entry.status.error_message = status.error_message
    return response


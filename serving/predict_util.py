"""RunPredict on TF Serving's protos, over one Servable (tensorflow_serving/servables/tensorflow/predict_util.cc).

Used by the Predict handler and by warmup, as in TF Serving, where both call RunPredict.
Validation order and messages follow predict_util.cc PreProcessPrediction.
"""
from __future__ import annotations

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from model_api import signature as sig
from model_api.status import SIGNATURE_KEY_NOT_FOUND
from serving.errors import ServingError, failed_precondition, from_tf_error, invalid_argument
from serving.servable import Servable


def signature_name_or_default(name: str) -> str:
    return name or sig.SERVING_DEFAULT


def run_predict(servable: Servable, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    signature_name = signature_name_or_default(request.model_spec.signature_name)
    signature_def = servable.signature_defs.get(signature_name)
    if signature_def is None or not sig.is_served_signature(signature_name):
        raise failed_precondition(f'{SIGNATURE_KEY_NOT_FOUND} "{signature_name}" not found.')
    inputs = _validated_inputs(request, signature_def, servable.name)
    output_filter = _validated_output_filter(request, signature_def)
    try:
        outputs = servable.run(signature_name, inputs, output_filter or None)
    except tf.errors.OpError as err:
        raise from_tf_error(err) from None
    except ServingError:
        raise
    except (TypeError, ValueError) as err:  # a feed the Session refuses before running
        raise invalid_argument(str(err).splitlines()[0]) from None
    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature_name
    for alias, value in outputs.items():
        response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return response


def _validated_output_filter(request, signature_def) -> list[str]:
    seen: list[str] = []
    for alias in request.output_filter:
        if alias not in signature_def.outputs:
            raise invalid_argument(f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                                   f"the set {{{','.join(sorted(signature_def.outputs))}}}.")
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen


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
        inputs[alias] = value
    return inputs

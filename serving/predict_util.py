"""RunPredict on TF Serving's protos, over one Servable (tensorflow_serving/servables/tensorflow/predict_util.cc).

Used by the Predict handler and by warmup, as in TF Serving, where both call RunPredict.
Validation order and messages follow predict_util.cc PreProcessPrediction; each input's
TensorProto is checked from its header before any value is built (Tensor::FromProto's rules).
"""
from __future__ import annotations

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from model_api import signature as sig
from model_api.status import SIGNATURE_KEY_NOT_FOUND
from serving.errors import ServingError, failed_precondition, from_tf_error, invalid_argument
from serving.servable import Servable

# TensorShape::MaxDimensions() (tensorflow/core/framework/tensor_shape.h).
MAX_DIMS = 254
INT64_MAX = 2**63 - 1
# The most an input may be grown to by values the request declares but does not send (TF fills a
# shape past the last value sent with copies of it, and an empty list with zeros or ""): the default
# --max_request_bytes, so filling in never builds more than an honest request of that size could.
MAX_FILLED_INPUT_BYTES = 64 << 20
# What one string element costs once built, besides its bytes: a pointer in the list and in the
# numpy object array make_ndarray builds, and a 24-byte tstring in the Session's feed.
STRING_ELEMENT_BYTES = 40
# The TensorProto field each dtype's values travel in when not in tensor_content, and how many
# numbers make one element (tensorflow/core/framework/tensor.proto).
VALUE_FIELDS = {
    tf.float32: ("float_val", 1), tf.float64: ("double_val", 1), tf.int64: ("int64_val", 1),
    tf.bool: ("bool_val", 1), tf.float16: ("half_val", 1), tf.bfloat16: ("half_val", 1),
    tf.uint32: ("uint32_val", 1), tf.uint64: ("uint64_val", 1), tf.complex64: ("scomplex_val", 2),
    tf.complex128: ("dcomplex_val", 2),
    **{dtype: ("int_val", 1) for dtype in (tf.int32, tf.uint8, tf.int16, tf.int8, tf.uint16, tf.qint8,
                                           tf.quint8, tf.qint16, tf.quint16, tf.qint32)},
}


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
    for alias in sorted(expected):  # saved_model::GetInputValues parses every input first
        check_tensor_header(request.inputs[alias], alias)
    for position, alias in enumerate(sorted(expected)):
        proto = request.inputs[alias]
        wanted = tf.dtypes.as_dtype(signature_def.inputs[alias].dtype)
        if proto.dtype != wanted.as_datatype_enum:
            got = tf.dtypes.as_dtype(proto.dtype).name
            raise invalid_argument(f"Expects arg[{position}] ({alias}) to be {wanted.name} but {got} is provided")
        try:
            value = tf.make_ndarray(proto)
        except Exception:  # noqa: BLE001 - malformed TensorProto
            raise _parsing_error(alias) from None
        shape = [d.size for d in signature_def.inputs[alias].tensor_shape.dim]
        if not signature_def.inputs[alias].tensor_shape.unknown_rank and (
                len(shape) != value.ndim or any(s not in (-1, v) for s, v in zip(shape, value.shape))):
            raise invalid_argument(f"input {alias} has shape {list(value.shape)}; the signature expects "
                                   f"{[s if s >= 0 else None for s in shape]}")
        inputs[alias] = value
    return inputs


def _parsing_error(alias: str, why: str = "") -> ServingError:
    # TF Serving's text (tensorflow/cc/saved_model/util.cc GetInputValues, on FromProto failing);
    # `why` says which of its rules the proto broke.
    return invalid_argument(f"tensor parsing error: {alias}" + (f": {why}" if why else ""))


def _element_count(proto, alias: str) -> int:
    """The elements the shape declares; TensorShape::IsValid's rules (no negative size, at most
    MAX_DIMS dimensions, a product that fits in int64), refused as FromProto refuses them."""
    dims = [d.size for d in proto.tensor_shape.dim]
    if len(dims) > MAX_DIMS:
        raise _parsing_error(alias, f"{len(dims)} dimensions, more than {MAX_DIMS}")
    if any(size < 0 for size in dims):
        raise _parsing_error(alias, f"shape {dims} has a negative size")
    count = 1
    for size in dims:
        count *= size
    if count > INT64_MAX:
        raise _parsing_error(alias, f"shape {dims} has more than 2**63 - 1 elements")
    return count


def _sizes(proto, dtype: tf.DType, count: int) -> tuple[int, int, int]:
    """(values sent, their bytes once built, the whole tensor's bytes once built)."""
    if dtype == tf.string:
        values = proto.string_val
        sent = sum(len(value) for value in values) + STRING_ELEMENT_BYTES * len(values)
        fill_each = STRING_ELEMENT_BYTES + (len(values[-1]) if values else 0)
        return len(values), sent, sent + max(count - len(values), 0) * fill_each
    field, per_element = VALUE_FIELDS.get(dtype, (None, 1))
    sent_count = len(getattr(proto, field)) // per_element if field else 0
    return sent_count, sent_count * dtype.size, count * dtype.size


def check_tensor_header(proto, alias: str) -> None:
    """Refuse, from the proto's header and value counts alone, a TensorProto that TF cannot parse or
    whose values would be built mostly from filling in (a ~50-byte request declaring 10**8 strings).

    Tensor::FromProto (tensorflow/core/framework/tensor.cc) refuses DT_INVALID, an invalid shape and a
    tensor_content whose size is not elements x item size; it fills a shape past the values sent
    with the last one. The fill is kept, up to MAX_FILLED_INPUT_BYTES."""
    if proto.dtype == 0:
        raise _parsing_error(alias, "its dtype is unset")
    count = _element_count(proto, alias)
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError:  # a number no DataType has
        raise _parsing_error(alias, f"unknown dtype {proto.dtype}") from None
    shape = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_content and dtype != tf.string:
        if len(proto.tensor_content) != count * dtype.size:
            raise _parsing_error(alias, f"tensor_content has {len(proto.tensor_content)} bytes; shape {shape} "
                                        f"of {dtype.name} needs {count * dtype.size}")
        return
    sent_count, sent, built = _sizes(proto, dtype, count)
    if built > max(MAX_FILLED_INPUT_BYTES, sent):
        raise _parsing_error(alias, f"shape {shape} declares {count} elements and the request sends {sent_count}; "
                                    f"filling in the rest would build {built} bytes, over the limit of "
                                    f"{MAX_FILLED_INPUT_BYTES} bytes for values a request does not send")

"""TF Serving's REST JSON <-> PredictRequest / PredictResponse (tensorflow_serving/util/json_tensor.cc).

Request: {"signature_name": "...", "instances": [...]} (row format) or {"inputs": ...}
(columnar). A signature with one input takes bare values per instance; several inputs take
an object per instance. Binary strings are {"b64": "<base64>"}.
Response: {"predictions": [...]} for rows (a bare value per row when there is one output,
an object per row otherwise) or {"outputs": ...} for columns. A string output whose name
ends in "_bytes" (or that is not valid UTF-8) is returned as {"b64": ...}.
"""
from __future__ import annotations

import base64
import binascii
import json

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from serving.errors import invalid_argument

ROW, COLUMNAR = "row", "columnar"


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _decode_strings(value):
    if _is_b64(value):
        if not isinstance(value["b64"], str):
            raise invalid_argument("'b64' value must be a string")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise invalid_argument("Unable to base64 decode") from None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    raise invalid_argument(f"expected a string or {{\"b64\": ...}} for a DT_STRING input, got {type(value).__name__}")


def _to_ndarray(value, dtype: tf.DType, alias: str) -> np.ndarray:
    if dtype == tf.string:
        decoded = _decode_strings(value)
        array = np.empty(np.shape(decoded) if isinstance(decoded, list) else (), dtype=object)
        if isinstance(decoded, list):
            array = np.array(decoded, dtype=object)
            if array.dtype != object or any(not isinstance(x, bytes) for x in array.ravel()):
                raise invalid_argument(f"input {alias}: string lists must be rectangular")
        else:
            array[()] = decoded
        return array
    try:
        return np.array(value, dtype=dtype.as_numpy_dtype)
    except (TypeError, ValueError) as err:
        raise invalid_argument(f"input {alias}: cannot convert to {dtype.name}: {err}") from None


def parse_predict_body(body: bytes, signature_inputs_for) -> tuple[predict_pb2.PredictRequest, str]:
    """JSON body -> (PredictRequest without model_spec name/version, ROW|COLUMNAR).

    `signature_inputs_for(signature_name)` returns that signature's {alias: TensorInfo}
    (it raises the right error for an unknown model or signature).
    """
    try:
        document = json.loads(body or b"")
    except (ValueError, UnicodeDecodeError) as err:
        raise invalid_argument(f"JSON Parse error: {err}") from None
    if not isinstance(document, dict):
        raise invalid_argument("JSON Value: request body must be a JSON object")
    signature_name = document.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise invalid_argument("'signature_name' key must be a string value.")
    if ("instances" in document) == ("inputs" in document):
        raise invalid_argument("Missing 'inputs' or 'instances' key" if "instances" not in document
                               else "Not both 'inputs' and 'instances' can be specified")
    inputs_info = signature_inputs_for(signature_name)
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = signature_name
    aliases = sorted(inputs_info)
    if "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list) or not instances:
            raise invalid_argument("'instances' must be a non-empty JSON array")
        columns = _rows_to_columns(instances, aliases)
        for alias, values in columns.items():
            dtype = tf.dtypes.as_dtype(inputs_info[alias].dtype) if alias in inputs_info else tf.string
            request.inputs[alias].CopyFrom(tf.make_tensor_proto(_to_ndarray(values, dtype, alias), dtype=dtype))
        return request, ROW
    inputs = document["inputs"]
    named = isinstance(inputs, dict) and not _is_b64(inputs)
    if not named:
        if len(aliases) != 1:
            raise invalid_argument(f"'inputs' must name each of the signature's inputs: {', '.join(aliases)}")
        inputs = {aliases[0]: inputs}
    for alias, values in inputs.items():
        dtype = tf.dtypes.as_dtype(inputs_info[alias].dtype) if alias in inputs_info else tf.string
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(_to_ndarray(values, dtype, alias), dtype=dtype))
    return request, COLUMNAR


def _rows_to_columns(instances: list, aliases: list[str]) -> dict:
    first = instances[0]
    named = isinstance(first, dict) and not _is_b64(first)
    if not named:
        if len(aliases) != 1:
            raise invalid_argument("instances must be objects naming each input: " + ", ".join(aliases))
        if any(isinstance(i, dict) and not _is_b64(i) for i in instances):
            raise invalid_argument("instances mix named and unnamed values")
        return {aliases[0]: instances}
    columns: dict[str, list] = {}
    for position, instance in enumerate(instances):
        if not isinstance(instance, dict) or _is_b64(instance):
            raise invalid_argument(f"instance {position} is not an object like instance 0")
        if set(instance) != set(first):
            raise invalid_argument(f"instance {position} has keys {sorted(instance)}, instance 0 has {sorted(first)}")
        for alias, value in instance.items():
            columns.setdefault(alias, []).append(value)
    return columns


def _jsonable(array: np.ndarray, alias: str):
    if array.dtype == object or array.dtype.kind in ("S", "O"):
        def convert(item):
            if isinstance(item, bytes):
                if not alias.endswith("_bytes"):
                    try:
                        return item.decode("utf-8")
                    except UnicodeDecodeError:
                        pass
                return {"b64": base64.b64encode(item).decode("ascii")}
            return item
        flat = [convert(x) for x in array.ravel()]
        return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]
    return array.tolist()


def format_predict_response(response: predict_pb2.PredictResponse, fmt: str) -> dict:
    arrays = {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}
    if fmt == COLUMNAR:
        if len(arrays) == 1:
            (alias, array), = arrays.items()
            return {"outputs": _jsonable(array, alias)}
        return {"outputs": {alias: _jsonable(a, alias) for alias, a in sorted(arrays.items())}}
    sizes = {alias: (a.shape[0] if a.ndim else None) for alias, a in arrays.items()}
    if len(set(sizes.values())) > 1 or None in sizes.values():
        raise invalid_argument(f"Tensors of the outputs have different batch sizes {sizes}; use the columnar "
                               "'inputs' format")
    if len(arrays) == 1:
        (alias, array), = arrays.items()
        return {"predictions": _jsonable(array, alias)}
    rows = next(iter(sizes.values()))
    columns = {alias: _jsonable(a, alias) for alias, a in arrays.items()}
    return {"predictions": [{alias: columns[alias][i] for alias in sorted(columns)} for i in range(rows)]}

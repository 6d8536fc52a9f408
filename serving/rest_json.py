"""The predict REST bodies, as TF Serving's util/json_tensor.cc reads and writes them: instances (row) or
inputs (columnar) -> PredictRequest, PredictResponse -> predictions or outputs (docs/serving.md)."""
from __future__ import annotations

import json

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from serving.errors import ServingError, invalid_argument
from serving.json_tensor import (column_tensor, debug_string, dense_values, fast_array, format_error, is_b64,
                                 tensor_proto, to_json)
from serving.predict_util import MAX_DIMS

ROW, COLUMNAR = "row", "columnar"


def _parse_document(body: bytes) -> dict:
    """ParseJson: rapidjson with kParseStopWhenDoneFlag (what follows the document is ignored),
    NaN and Infinity accepted; the top level must be an object."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise invalid_argument(f"JSON Parse error: Invalid encoding in string. at offset: {err.start}") from None
    start = len(text) - len(text.lstrip(" \t\n\r"))
    if start == len(text):
        raise invalid_argument(f"JSON Parse error: The document is empty. at offset: {start}")
    try:
        document, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as err:
        raise invalid_argument(f"JSON Parse error: {err.msg} at offset: {err.pos}") from None
    if not isinstance(document, dict):
        raise format_error(document, "Is not object")
    return document


def parse_predict_body(body: bytes, signature_inputs_for) -> tuple[predict_pb2.PredictRequest, str]:
    """JSON body -> (PredictRequest without model_spec name/version, ROW|COLUMNAR): FillPredictRequestFromJson.

    `signature_inputs_for(signature_name)` returns that signature's {alias: TensorInfo}
    (it raises the right error for an unknown model or signature).
    """
    try:
        return _predict_request(_parse_document(body), body, signature_inputs_for)
    except RecursionError:  # rapidjson parses iteratively; no tensor nests this deep (MAX_DIMS)
        raise invalid_argument(f"JSON Parse error: the document nests lists or objects too deeply (a tensor has at "
                               f"most {MAX_DIMS} dimensions)") from None


def _predict_request(document: dict, body: bytes, signature_inputs_for) -> tuple[predict_pb2.PredictRequest, str]:
    signature_name = document.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise format_error(document, "not formatted correctly. 'signature_name' key must be a string value.")
    inputs_info = signature_inputs_for(signature_name)
    if not inputs_info:
        raise invalid_argument(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = signature_name
    dtypes = {alias: tf.dtypes.as_dtype(info.dtype) for alias, info in inputs_info.items()}
    may_hold_bools = b"true" in body or b"false" in body
    if "instances" in document:
        if "inputs" in document:
            raise format_error(document, "Not formatted correctly expecting only one of 'inputs' or 'instances' "
                                          "keys to exist ")
        instances = document["instances"]
        if not isinstance(instances, list):
            raise format_error(document, "Expecting 'instances' to be an list/array")
        if not instances:
            raise format_error(document, "No values in 'instances' array")
        for alias, tensor in _instances_to_tensors(instances, dtypes, may_hold_bools).items():
            request.inputs[alias].CopyFrom(tensor)
        return request, ROW
    if "inputs" in document:
        for alias, tensor in _inputs_to_tensors(document["inputs"], dtypes, may_hold_bools).items():
            request.inputs[alias].CopyFrom(tensor)
        return request, COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _is_named(value) -> bool:
    return isinstance(value, dict) and not is_b64(value)


def _inputs_to_tensors(value, dtypes: dict, may_hold_bools: bool) -> dict:
    """FillTensorMapFromInputsMap."""
    if not _is_named(value):
        if len(dtypes) > 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as multiple input tensors "
                                   "required as per tensorinfo_map")
        (alias, dtype), = dtypes.items()
        return {alias: column_tensor(value, dtype, may_hold_bools)}
    tensors = {}
    for alias in sorted(dtypes):
        if alias not in value:
            raise invalid_argument(f"Missing named input: {alias} in 'inputs' object.")
        tensors[alias] = column_tensor(value[alias], dtypes[alias], may_hold_bools)
    return tensors


def _instances_to_tensors(instances: list, dtypes: dict, may_hold_bools: bool) -> dict:
    """FillTensorMapFromInstancesList: one tensor per input, [len(instances)] + each instance's shape."""
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise invalid_argument("instances is a plain list, but expecting list of objects as multiple input tensors "
                               "required as per tensorinfo_map")
    if not _is_named(instances[0]):
        alias = sorted(dtypes)[0]
        array = fast_array(instances, dtypes[alias], may_hold_bools)
        if array is not None:
            return {alias: tf.make_tensor_proto(array, dtype=dtypes[alias])}
    columns: dict[str, tuple] = {}  # alias -> (the first instance's shape and size, every instance's values)
    for position, instance in enumerate(instances):
        if _is_named(instances[0]):
            _add_named_instance(instance, position, dtypes, columns)
        elif _is_named(instance):
            raise invalid_argument(f"Expecting value/list but got object at item {position} of input list")
        else:
            _add_item(instance, sorted(dtypes)[0], dtypes, columns,
                      f"Failed to process element: {position} of 'instances' list. Error: ")
    return {alias: tensor_proto([len(instances), *shape], flat, dtypes[alias])
            for alias, (shape, _, flat) in columns.items()}


def _add_named_instance(instance, position: int, dtypes: dict, columns: dict) -> None:
    if not _is_named(instance):
        raise invalid_argument(f"Expecting object but got list at item {position} of input list")
    for alias, value in instance.items():
        _add_item(value, alias, dtypes, columns,
                  f"Failed to process element: {position} key: {alias} of 'instances' list. Error: ")
    if set(instance) != set(dtypes):
        raise invalid_argument(f"Failed to process element: {position} of 'instances' list. JSON object: "
                               f"{debug_string(instance)} keys must be equal to: {','.join(sorted(dtypes))}")


def _add_item(value, alias: str, dtypes: dict, columns: dict, context: str) -> None:
    """AddInstanceItem: each instance of an input has the first one's size and shape. Its errors are
    wrapped in `context`, as TF Serving wraps them with status.ToString() ("CODE: message")."""
    try:
        if alias not in dtypes:
            raise invalid_argument(f"JSON object: does not have named input: {alias}")
        shape, flat = dense_values(value, dtypes[alias])
        if alias not in columns:
            columns[alias] = (shape, len(flat), flat)
            return
        first_shape, first_size, every = columns[alias]
        if len(flat) != first_size:
            raise invalid_argument(f"Expecting tensor size: {first_size} but got: {len(flat)}")
        if shape != first_shape:
            raise invalid_argument(f"Expecting shape [{','.join(map(str, first_shape))}] but got: "
                                   f"[{','.join(map(str, shape))}]")
        every.extend(flat)
    except ServingError as err:
        raise invalid_argument(f"{context}{err.code.name}: {err.message}") from None


def format_predict_response(response: predict_pb2.PredictResponse, fmt: str) -> dict:
    arrays = {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}
    if fmt == COLUMNAR:
        if len(arrays) == 1:
            (alias, array), = arrays.items()
            return {"outputs": to_json(array, alias)}
        return {"outputs": {alias: to_json(a, alias) for alias, a in sorted(arrays.items())}}
    rows = _batch_size(arrays)
    if len(arrays) == 1:
        (alias, array), = arrays.items()
        return {"predictions": to_json(array, alias)}
    columns = {alias: to_json(a, alias) for alias, a in arrays.items()}
    return {"predictions": [{alias: columns[alias][i] for alias in sorted(columns)} for i in range(rows)]}


def _batch_size(arrays: dict) -> int:
    """MakeRowFormatJsonFromTensors: every output is batch-major, with one batch size."""
    rows = None
    for alias, array in sorted(arrays.items()):
        if not array.ndim:
            raise invalid_argument(f"Tensor name: {alias} has no shape information ")
        if rows is not None and array.shape[0] != rows:
            raise invalid_argument(f"Tensor name: {alias} has inconsistent batch size: {array.shape[0]} expecting: "
                                   f"{rows}")
        rows = array.shape[0]
    return rows

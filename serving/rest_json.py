"""TF Serving's REST JSON <-> PredictRequest / PredictResponse, as tensorflow_serving/util/json_tensor.cc
converts them: the same checks, in the same order, with the same messages.

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
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
from tensorflow_serving.apis import predict_pb2

from serving.errors import ServingError, invalid_argument, with_code
from serving.predict_util import MAX_DIMS, VALUE_FIELDS

ROW, COLUMNAR = "row", "columnar"
_DEBUG_LIMIT = 256  # kMaxJsonDebugStringBytes: values quoted in a message are cut near here
_INDENT = "    "  # rapidjson::PrettyWriter's default indent
# AddValueToTensor's accepted JSON numbers per dtype (rapidjson IsInt, IsInt64, IsUint, IsUint64).
# int16, int8 and uint8 take IsInt there and wrap out-of-range values when the tensor is built;
# here they must fit the dtype (docs: a deliberate difference).
_INT_RANGES = {tf.int32: (-2**31, 2**31 - 1), tf.int16: (-2**15, 2**15 - 1), tf.int8: (-2**7, 2**7 - 1),
               tf.uint8: (0, 2**8 - 1), tf.int64: (-2**63, 2**63 - 1), tf.uint32: (0, 2**32 - 1),
               tf.uint64: (0, 2**64 - 1)}
_DATA_TYPE_STRINGS = {tf.float32: "float", tf.float64: "double", tf.float16: "half"}  # DataTypeString


class _Full(Exception):
    """The debug string reached _DEBUG_LIMIT."""


def _debug(value) -> str:
    """JsonValueToDebugString: rapidjson's PrettyWriter with single-line arrays, stopped at the first
    write once _DEBUG_LIMIT bytes are out (so the text may be cut)."""
    out: list[str] = []
    size = [0]

    def put(text: str) -> None:
        if size[0] >= _DEBUG_LIMIT:
            raise _Full
        out.append(text)
        size[0] += len(text.encode("utf-8", "surrogatepass"))

    def write(item, prefix: str, depth: int) -> None:
        if isinstance(item, dict):
            put(prefix + "{")
            for i, (key, member) in enumerate(item.items()):
                put(("," if i else "") + "\n" + _INDENT * (depth + 1) + json.dumps(key, ensure_ascii=False))
                write(member, ": ", depth + 1)
            put(("\n" + _INDENT * depth if item else "") + "}")
        elif isinstance(item, list):
            put(prefix + "[")
            for i, element in enumerate(item):
                write(element, ", " if i else "", depth + 1)
            put("]")
        else:
            put(prefix + json.dumps(item, ensure_ascii=False))

    try:
        write(value, "", 0)
    except _Full:
        pass
    return "".join(out)


def _json_type(value) -> str:
    """JsonTypeString."""
    if value is None or isinstance(value, bool):
        return {None: "Null", False: "False", True: "True"}[value]
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _dtype_string(dtype: tf.DType) -> str:
    return _DATA_TYPE_STRINGS.get(dtype, dtype.name)


def _type_error(value, dtype: tf.DType):
    return invalid_argument(f"JSON Value: {_debug(value)} Type: {_json_type(value)} is not of expected type: "
                            f"{_dtype_string(dtype)}")


def _format_error(value, text: str):
    return invalid_argument(f"JSON Value: {_debug(value)} {text}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _string_value(value) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:  # a lone \ud800-style escape, which rapidjson refuses while parsing
        raise invalid_argument("JSON Parse error: The surrogate pair in string is invalid.") from None


def _decode_b64(value) -> bytes:
    """JsonDecodeBase64Object."""
    if not _is_b64(value):
        raise _format_error(value, "not formatted correctly for base64 data")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _scalar(value, dtype: tf.DType):
    """AddValueToTensor: one JSON value as `dtype`, or TF Serving's refusal."""
    if isinstance(value, dict):
        if dtype == tf.string:
            return _decode_b64(value)
        raise _type_error(value, dtype)
    if dtype in (tf.float32, tf.float64):
        if not _is_number(value):
            raise _type_error(value, dtype)
        return float(value)
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            raise _type_error(value, dtype)
        return value
    if dtype == tf.string:
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return _string_value(value)
    if dtype == tf.bool:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    raise with_code("UNIMPLEMENTED", f"Conversion of JSON Value: {_debug(value)} to type: {_dtype_string(dtype)}")


def _dense_shape(value) -> list[int]:
    """GetDenseTensorShape: the sizes along the first element of each nested list (more than MAX_DIMS
    is refused when the tensor is parsed, as TF refuses it: predict_util.check_tensor_header)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value, level: int, shape: list[int], dtype: tf.DType, out: list) -> None:
    """FillTensorProto: every leaf at depth len(shape), every list the size its level has."""
    if not isinstance(value, list):
        if level != len(shape):
            raise invalid_argument(f"JSON Value: {_debug(value)} found at incorrect level: {level + 1} in the JSON "
                                   f"DOM. Expected at level: {len(shape)}")
        out.append(_scalar(value, dtype))
        return
    if level >= len(shape):
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise invalid_argument(f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: "
                               f"{shape[level]}")
    for element in value:
        _fill(element, level + 1, shape, dtype, out)


def _values(value, dtype: tf.DType) -> tuple[list[int], list]:
    """One JSON value -> (its dense shape, its leaves converted to `dtype`, row-major)."""
    shape, flat = _dense_shape(value), []
    _fill(value, 0, shape, dtype, flat)
    return shape, flat


def _fast_array(value, dtype: tf.DType, may_hold_bools: bool):
    """A numeric nested list straight through numpy, when that gives what _values would: no bool
    (numpy would make it 1.0), every leaf a number the dtype accepts, rectangular. None otherwise."""
    floats = dtype in (tf.float32, tf.float64)
    if may_hold_bools or not (floats or dtype in _INT_RANGES):
        return None
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if array.dtype.kind == "f" and floats or array.dtype.kind in "iu" and (floats or _in_range(array, dtype)):
        with np.errstate(over="ignore"):  # rapidjson GetFloat: past float32 is inf, as here
            return array.astype(dtype.as_numpy_dtype)
    return None


def _in_range(array: np.ndarray, dtype: tf.DType) -> bool:
    low, high = _INT_RANGES[dtype]
    return array.size > 0 and low <= array.min() and array.max() <= high


def _tensor(shape: list[int], flat: list, dtype: tf.DType):
    """The TensorProto json_tensor.cc builds: the shape, and the values in the dtype's *_val field (no
    numpy array in between, which could not hold more than 64 dimensions)."""
    tensor = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    tensor.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape)
    getattr(tensor, "string_val" if dtype == tf.string else VALUE_FIELDS[dtype][0]).extend(flat)
    return tensor


def _column(value, dtype: tf.DType, may_hold_bools: bool):
    """FillTensorMapFromInputsMap's conversion of one input's value."""
    array = _fast_array(value, dtype, may_hold_bools)
    if array is not None:
        return tf.make_tensor_proto(array, dtype=dtype)
    return _tensor(*_values(value, dtype), dtype)


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
        raise _format_error(document, "Is not object")
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
        raise _format_error(document, "not formatted correctly. 'signature_name' key must be a string value.")
    inputs_info = signature_inputs_for(signature_name)
    if not inputs_info:
        raise invalid_argument(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = signature_name
    dtypes = {alias: tf.dtypes.as_dtype(info.dtype) for alias, info in inputs_info.items()}
    may_hold_bools = b"true" in body or b"false" in body
    if "instances" in document:
        if "inputs" in document:
            raise _format_error(document, "Not formatted correctly expecting only one of 'inputs' or 'instances' "
                                          "keys to exist ")
        instances = document["instances"]
        if not isinstance(instances, list):
            raise _format_error(document, "Expecting 'instances' to be an list/array")
        if not instances:
            raise _format_error(document, "No values in 'instances' array")
        for alias, tensor in _instances_to_tensors(instances, dtypes, may_hold_bools).items():
            request.inputs[alias].CopyFrom(tensor)
        return request, ROW
    if "inputs" in document:
        for alias, tensor in _inputs_to_tensors(document["inputs"], dtypes, may_hold_bools).items():
            request.inputs[alias].CopyFrom(tensor)
        return request, COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _is_b64(value) -> bool:
    """IsValBase64Object: exactly one key, "b64", holding a string."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_named(value) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _inputs_to_tensors(value, dtypes: dict, may_hold_bools: bool) -> dict:
    """FillTensorMapFromInputsMap."""
    if not _is_named(value):
        if len(dtypes) > 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as multiple input tensors "
                                   "required as per tensorinfo_map")
        (alias, dtype), = dtypes.items()
        return {alias: _column(value, dtype, may_hold_bools)}
    tensors = {}
    for alias in sorted(dtypes):
        if alias not in value:
            raise invalid_argument(f"Missing named input: {alias} in 'inputs' object.")
        tensors[alias] = _column(value[alias], dtypes[alias], may_hold_bools)
    return tensors


def _instances_to_tensors(instances: list, dtypes: dict, may_hold_bools: bool) -> dict:
    """FillTensorMapFromInstancesList: one tensor per input, [len(instances)] + each instance's shape."""
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise invalid_argument("instances is a plain list, but expecting list of objects as multiple input tensors "
                               "required as per tensorinfo_map")
    if not _is_named(instances[0]):
        alias = sorted(dtypes)[0]
        array = _fast_array(instances, dtypes[alias], may_hold_bools)
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
    return {alias: _tensor([len(instances), *shape], flat, dtypes[alias]) for alias, (shape, _, flat) in columns.items()}


def _add_named_instance(instance, position: int, dtypes: dict, columns: dict) -> None:
    if not _is_named(instance):
        raise invalid_argument(f"Expecting object but got list at item {position} of input list")
    for alias, value in instance.items():
        _add_item(value, alias, dtypes, columns,
                  f"Failed to process element: {position} key: {alias} of 'instances' list. Error: ")
    if set(instance) != set(dtypes):
        raise invalid_argument(f"Failed to process element: {position} of 'instances' list. JSON object: "
                               f"{_debug(instance)} keys must be equal to: {','.join(sorted(dtypes))}")


def _add_item(value, alias: str, dtypes: dict, columns: dict, context: str) -> None:
    """AddInstanceItem: each instance of an input has the first one's size and shape. Its errors are
    wrapped in `context`, as TF Serving wraps them with status.ToString() ("CODE: message")."""
    try:
        if alias not in dtypes:
            raise invalid_argument(f"JSON object: does not have named input: {alias}")
        shape, flat = _values(value, dtypes[alias])
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
    if array.dtype == np.float32:
        flat = [_float32_as_written(x) for x in array.ravel()]
        return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]
    return array.tolist()


def _float32_as_written(value: np.float32) -> float:
    """The number json_tensor.cc WriteDecimal writes for a float: absl::StrCat's six significant
    digits when they read back as the same float, else %.9g (max_digits10), never the float's exact
    double (0.2f is 0.2, not 0.20000000298023224). Returned as the double of that decimal, whose
    shortest repr (what json.dumps writes) is the same digits."""
    if not np.isfinite(value):
        return float(value)
    short = float(f"{value:g}")
    return short if np.float32(short) == value else float(f"{value:.9g}")


def format_predict_response(response: predict_pb2.PredictResponse, fmt: str) -> dict:
    arrays = {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}
    if fmt == COLUMNAR:
        if len(arrays) == 1:
            (alias, array), = arrays.items()
            return {"outputs": _jsonable(array, alias)}
        return {"outputs": {alias: _jsonable(a, alias) for alias, a in sorted(arrays.items())}}
    rows = _batch_size(arrays)
    if len(arrays) == 1:
        (alias, array), = arrays.items()
        return {"predictions": _jsonable(array, alias)}
    columns = {alias: _jsonable(a, alias) for alias, a in arrays.items()}
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

"""One JSON value <-> one TensorProto, as TF Serving's util/json_tensor.cc converts them (AddValueToTensor,
FillTensorProto, WriteDecimal) with the same checks and messages; the documents are rest_json.py's."""
from __future__ import annotations

import base64
import binascii
import json

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

from serving.errors import invalid_argument, with_code
from serving.predict_util import VALUE_FIELDS

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


def debug_string(value) -> str:
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
    return invalid_argument(f"JSON Value: {debug_string(value)} Type: {_json_type(value)} is not of expected type: "
                            f"{_dtype_string(dtype)}")


def format_error(value, text: str):
    return invalid_argument(f"JSON Value: {debug_string(value)} {text}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _string_value(value) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:  # a lone \ud800-style escape, which rapidjson refuses while parsing
        raise invalid_argument("JSON Parse error: The surrogate pair in string is invalid.") from None


def _decode_b64(value) -> bytes:
    """JsonDecodeBase64Object."""
    if not is_b64(value):
        raise format_error(value, "not formatted correctly for base64 data")
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
    raise with_code("UNIMPLEMENTED", f"Conversion of JSON Value: {debug_string(value)} to type: {_dtype_string(dtype)}")


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
            raise invalid_argument(f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} in the "
                                   f"JSON DOM. Expected at level: {len(shape)}")
        out.append(_scalar(value, dtype))
        return
    if level >= len(shape):
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise invalid_argument(f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: "
                               f"{shape[level]}")
    for element in value:
        _fill(element, level + 1, shape, dtype, out)


def dense_values(value, dtype: tf.DType) -> tuple[list[int], list]:
    """One JSON value -> (its dense shape, its leaves converted to `dtype`, row-major)."""
    shape, flat = _dense_shape(value), []
    _fill(value, 0, shape, dtype, flat)
    return shape, flat


def fast_array(value, dtype: tf.DType, may_hold_bools: bool):
    """A numeric nested list straight through numpy, when that gives what dense_values would: no bool
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


def tensor_proto(shape: list[int], flat: list, dtype: tf.DType):
    """The TensorProto json_tensor.cc builds: the shape, and the values in the dtype's *_val field (no
    numpy array in between, which could not hold more than 64 dimensions)."""
    tensor = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    tensor.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape)
    getattr(tensor, "string_val" if dtype == tf.string else VALUE_FIELDS[dtype][0]).extend(flat)
    return tensor


def column_tensor(value, dtype: tf.DType, may_hold_bools: bool):
    """FillTensorMapFromInputsMap's conversion of one input's value."""
    array = fast_array(value, dtype, may_hold_bools)
    if array is not None:
        return tf.make_tensor_proto(array, dtype=dtype)
    return tensor_proto(*dense_values(value, dtype), dtype)


def is_b64(value) -> bool:
    """IsValBase64Object: exactly one key, "b64", holding a string."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def to_json(array: np.ndarray, alias: str):
    """One output tensor as JSON: strings as text, or {"b64": ...} when the output's name ends in "_bytes"
    or they are not UTF-8; float32 as WriteDecimal writes it."""
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

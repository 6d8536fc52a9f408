import base64
import json

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import predict_pb2

from serving.errors import ServingError
from serving.rest_json import COLUMNAR, ROW, format_predict_response, parse_predict_body


def inputs(**dtypes):
    return lambda signature_name: {name: meta_graph_pb2.TensorInfo(dtype=dtype.as_datatype_enum)
                                   for name, dtype in dtypes.items()}


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def test_row_format_with_b64_values_for_a_single_input():
    body = json.dumps({"instances": [b64(b"\xff\xd8one"), b64(b"two")]}).encode()
    request, fmt = parse_predict_body(body, inputs(image_bytes=tf.string))
    assert fmt == ROW
    assert list(tf.make_ndarray(request.inputs["image_bytes"])) == [b"\xff\xd8one", b"two"]


def test_row_format_with_named_inputs_and_a_signature_name():
    body = json.dumps({"signature_name": "s", "instances": [{"image_bytes": b64(b"a")}]}).encode()
    request, _ = parse_predict_body(body, inputs(image_bytes=tf.string))
    assert request.model_spec.signature_name == "s"
    assert list(tf.make_ndarray(request.inputs["image_bytes"])) == [b"a"]


def test_columnar_format():
    body = json.dumps({"inputs": {"images": [[[1.5]], [[2.5]]]}}).encode()
    request, fmt = parse_predict_body(body, inputs(images=tf.float32))
    assert fmt == COLUMNAR
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["images"]), [[[1.5]], [[2.5]]])


@pytest.mark.parametrize("body,message", [
    (b"{not json", "JSON Parse error"),
    (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
    (b"{}", "Missing 'inputs' or 'instances' key"),
    (b'{"inputs": [], "instances": []}', "Not formatted correctly expecting only one of 'inputs' or 'instances'"),
    (b'{"instances": [{"b64": "%%%"}]}', "Unable to base64 decode"),
    (b'{"instances": [], "signature_name": 3}', "'signature_name' key must be a string value."),
])
def test_malformed_bodies_are_invalid_argument(body, message):
    with pytest.raises(ServingError) as info:
        parse_predict_body(body, inputs(image_bytes=tf.string))
    assert info.value.http_status == 400 and message in info.value.message


def _response(**arrays) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    for name, array in arrays.items():
        response.outputs[name].CopyFrom(tf.make_tensor_proto(array))
    return response


def test_row_response_is_one_object_per_instance_with_text_labels():
    response = _response(labels=np.array([b"cat", b"dog"], dtype=object), classes=np.array([0, 1]),
                         probabilities=np.array([[0.75, 0.25], [0.5, 0.5]], np.float32))
    assert format_predict_response(response, ROW) == {"predictions": [
        {"classes": 0, "labels": "cat", "probabilities": [0.75, 0.25]},
        {"classes": 1, "labels": "dog", "probabilities": [0.5, 0.5]}]}


def test_columnar_response_and_bytes_outputs_are_base64():
    response = _response(raw_bytes=np.array([b"\x00\xff"], dtype=object))
    assert format_predict_response(response, COLUMNAR) == {"outputs": [{"b64": "AP8="}]}


def _refusal(body: bytes, **dtypes) -> ServingError:
    with pytest.raises(ServingError) as info:
        parse_predict_body(body, inputs(**dtypes))
    return info.value


# Each message is json_tensor.cc's: AddValueToTensor's TypeError ("JSON Value: <value> Type: <JSON type> is
# not of expected type: <DataTypeString>"), wrapped by FillTensorMapFromInstancesList with the inner
# status's ToString() ("INVALID_ARGUMENT: ...").
@pytest.mark.parametrize("body,dtype,message", [
    (b'{"instances": ["1.5", true]}', tf.float32, "Failed to process element: 0 of 'instances' list. Error: "
                                                  'INVALID_ARGUMENT: JSON Value: "1.5" Type: String is not of expected type: float'),
    (b'{"instances": [1.5, true]}', tf.float32, "Failed to process element: 1 of 'instances' list. Error: "
                                                "INVALID_ARGUMENT: JSON Value: true Type: True is not of expected type: float"),
    (b'{"instances": [1.7]}', tf.int32, "Failed to process element: 0 of 'instances' list. Error: "
                                        "INVALID_ARGUMENT: JSON Value: 1.7 Type: Number is not of expected type: int32"),
    (b'{"instances": [true]}', tf.int64, "Failed to process element: 0 of 'instances' list. Error: "
                                         "INVALID_ARGUMENT: JSON Value: true Type: True is not of expected type: int64"),
    (b'{"inputs": [1, 0]}', tf.bool, "JSON Value: 1 Type: Number is not of expected type: bool"),
    (b'{"inputs": {"x": [{"y": 1}]}}', tf.float32,
     'JSON Value: {\n    "y": 1\n} Type: Object is not of expected type: float'),
])
def test_a_value_of_the_wrong_json_type_is_tf_servings_type_error(body, dtype, message):
    error = _refusal(body, x=dtype)
    assert (error.http_status, error.message) == (400, message)


def test_an_integer_outside_uint8_is_a_400_type_error_not_a_500():
    error = _refusal(b'{"instances": [255, 300]}', x=tf.uint8)
    assert (error.http_status, error.message) == (
        400, "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
             "JSON Value: 300 Type: Number is not of expected type: uint8")


def test_integers_within_uint8_and_int64_extremes_are_accepted():
    request, _ = parse_predict_body(b'{"inputs": {"a": [0, 255], "b": [-9223372036854775808, 9223372036854775807]}}',
                                    inputs(a=tf.uint8, b=tf.int64))
    assert tf.make_ndarray(request.inputs["a"]).tolist() == [0, 255]
    assert tf.make_ndarray(request.inputs["b"]).tolist() == [-2**63, 2**63 - 1]


def test_json_nested_past_the_parsers_depth_is_a_400_not_a_500():
    body = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    error = _refusal(body, x=tf.float32)
    assert error.http_status == 400
    assert error.message == "JSON Parse error: the document nests lists or objects too deeply (a tensor has at most " \
                            "254 dimensions)"


def test_json_nested_within_the_parsers_depth_keeps_every_level_for_the_tensor_check():
    # json_tensor.cc builds the shape, whatever its rank; Tensor::FromProto then refuses more than 254
    # dimensions (predict_util.check_tensor_header, tests/serving/test_faults_requests.py).
    request, _ = parse_predict_body(b'{"instances": ' + b"[" * 300 + b"]" * 300 + b"}", inputs(x=tf.float32))
    assert len(request.inputs["x"].tensor_shape.dim) == 300


def test_ragged_instances_are_tf_servings_size_error():
    error = _refusal(b'{"instances": [[1.5, 2], [3]]}', x=tf.float32)
    assert error.message == ("Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
                             "Expecting tensor size: 2 but got: 1")


def test_instances_missing_an_input_name_every_required_key():
    error = _refusal(b'{"instances": [{"a": 1.0, "b": "s"}, {"a": 2.0}]}', a=tf.float32, b=tf.string)
    assert error.message == ("Failed to process element: 1 of 'instances' list. JSON object: {\n    \"a\": 2.0\n} "
                             "keys must be equal to: a,b")


def test_an_unsupported_dtype_is_unimplemented_as_in_tf_serving():
    error = _refusal(b'{"inputs": [1.0]}', x=tf.float16)
    assert (error.code.name, error.message) == ("UNIMPLEMENTED", "Conversion of JSON Value: 1.0 to type: half")


def test_text_after_the_document_is_ignored_as_rapidjson_stops_when_done():
    request, _ = parse_predict_body(b'{"inputs": [1.5]} trailing', inputs(x=tf.float32))
    assert tf.make_ndarray(request.inputs["x"]).tolist() == [1.5]


def test_float32_outputs_are_written_as_tf_serving_writes_them():
    # json_tensor.cc WriteDecimal: six significant digits when they read back as the same float, else %.9g.
    response = _response(probabilities=np.array([[0.2, 0.1234567, 1.0]], np.float32))
    text = json.dumps(format_predict_response(response, ROW))
    assert text == '{"predictions": [[0.2, 0.123456702, 1.0]]}'


def test_row_response_with_outputs_of_different_batch_sizes_is_tf_servings_error():
    response = _response(a=np.zeros([2], np.float32), b=np.zeros([3], np.float32))
    with pytest.raises(ServingError) as info:
        format_predict_response(response, ROW)
    assert info.value.message == "Tensor name: b has inconsistent batch size: 3 expecting: 2"

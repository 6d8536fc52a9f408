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
    (b"[1, 2]", "must be a JSON object"),
    (b"{}", "Missing 'inputs' or 'instances' key"),
    (b'{"inputs": [], "instances": []}', "Not both"),
    (b'{"instances": [{"b64": "%%%"}]}', "base64"),
    (b'{"instances": [], "signature_name": 3}', "signature_name"),
])
def test_malformed_bodies_are_invalid_argument(body, message):
    with pytest.raises(ServingError, match=message) as info:
        parse_predict_body(body, inputs(image_bytes=tf.string))
    assert info.value.http_status == 400


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

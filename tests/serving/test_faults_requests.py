"""Malformed requests against an in-process local server: a TensorProto whose header declares more
than it carries, JSON nested too deeply, a missing or nameless ModelSpec (TF Serving's codes and text)."""
import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from tests.conftest import start_local_server

MIB = 1 << 20


@pytest.fixture(scope="module")
def server(model_base):
    server = start_local_server(model_base)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield channel


def _predict(channel, request, timeout=30):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=timeout)


def _refusal(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def _request(tensor, name="pets") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["image_bytes"].CopyFrom(tensor)
    return request


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_fifty_bytes_declaring_a_hundred_million_strings_is_refused_without_allocating(channel, cat_jpeg):
    _predict(channel, _request(tf.make_tensor_proto([cat_jpeg])))  # the graph is warm before measuring
    tensor = tf.make_tensor_proto([b""], dtype=tf.string)
    tensor.ClearField("string_val")
    tensor.tensor_shape.dim[0].size = 100_000_000
    request = _request(tensor)
    assert len(request.SerializeToString()) < 60
    before = _rss_bytes()
    error = _refusal(_predict, channel, request)
    growth = _rss_bytes() - before
    print(f"RSS growth while refusing [100000000] strings: {growth / MIB:.1f} MiB")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("tensor parsing error: image_bytes: shape [100000000] declares 100000000")
    assert growth < 50 * MIB


def test_a_value_repeated_past_the_values_sent_is_still_tf_rule_within_the_limit(channel, cat_jpeg):
    tensor = tf.make_tensor_proto([cat_jpeg])
    tensor.tensor_shape.dim[0].size = 3  # Tensor::FromProto repeats the last value sent
    response = _predict(channel, _request(tensor))
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    assert probabilities.shape[0] == 3
    np.testing.assert_allclose(probabilities[0], probabilities[2], rtol=1e-5)


@pytest.mark.parametrize("mutate,fragment", [
    (lambda t: t.tensor_shape.dim[0].__setattr__("size", -2), "has a negative size"),
    (lambda t: [t.tensor_shape.dim.add(size=2**40) for _ in range(2)], "more than 2**63 - 1 elements"),
    (lambda t: [t.tensor_shape.dim.add(size=1) for _ in range(254)], "255 dimensions, more than 254"),
    (lambda t: t.__setattr__("dtype", 0), "its dtype is unset"),
])
def test_a_shape_tensorflow_cannot_parse_is_tf_servings_tensor_parsing_error(channel, cat_jpeg, mutate, fragment):
    tensor = tf.make_tensor_proto([cat_jpeg])
    mutate(tensor)
    error = _refusal(_predict, channel, _request(tensor))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("tensor parsing error: image_bytes: ")
    assert fragment in error.details()


def test_tensor_content_of_the_wrong_size_is_a_tensor_parsing_error(channel):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "pets"
    request.model_spec.signature_name = "predict_images"
    tensor = tf.make_tensor_proto(np.zeros((1, 8, 8, 3), np.float32))
    tensor.tensor_shape.dim[0].size = 1_000_000  # 768 bytes sent for 768 million
    request.inputs["images"].CopyFrom(tensor)
    error = _refusal(_predict, channel, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("tensor parsing error: images: tensor_content has 768 bytes")


def test_predict_without_a_model_spec_is_invalid_argument(channel, cat_jpeg):
    request = predict_pb2.PredictRequest()
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([cat_jpeg]))
    error = _refusal(_predict, channel, request)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def test_predict_with_an_empty_model_name_is_invalid_argument(channel, cat_jpeg):
    request = _request(tf.make_tensor_proto([cat_jpeg]), name="")
    request.model_spec.signature_name = "serving_default"  # a ModelSpec present, its name empty
    error = _refusal(_predict, channel, request)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")


def test_metadata_without_a_model_spec_or_name_is_invalid_argument(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    missing = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    error = _refusal(stub.GetModelMetadata, missing, timeout=30)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    nameless = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    nameless.model_spec.signature_name = "serving_default"
    error = _refusal(stub.GetModelMetadata, nameless, timeout=30)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")


def test_metadata_checks_the_model_spec_before_the_metadata_fields(channel):
    # get_model_metadata_impl.cc: has_model_spec() first, then ValidateGetModelMetadataRequest.
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    error = _refusal(stub.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest(), timeout=30)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def test_model_status_without_a_model_spec_is_invalid_argument_and_an_empty_name_not_found(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    error = _refusal(stub.GetModelStatus, get_model_status_pb2.GetModelStatusRequest(), timeout=30)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    # get_model_status_impl.cc looks an empty name up like any other: NOT_FOUND, as TF Serving answers.
    nameless = get_model_status_pb2.GetModelStatusRequest()
    nameless.model_spec.signature_name = "serving_default"
    error = _refusal(stub.GetModelStatus, nameless, timeout=30)
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "Could not find any versions of model ")


@pytest.mark.parametrize("depth,message", [
    (300, "tensor parsing error: image_bytes: 300 dimensions, more than 254"),
    (100_000, "JSON Parse error: the document nests lists or objects too deeply"),
])
def test_deeply_nested_rest_json_is_a_400_with_tf_servings_text(server, depth, message):
    body = b'{"instances": ' + b"[" * depth + b'"x"' + b"]" * depth + b"}"  # depth dimensions
    response = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/pets:predict", data=body, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)

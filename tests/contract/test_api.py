"""TF Serving's API contract, asserted identically over gRPC and REST."""
import json

import numpy as np
import pytest

from tests.contract.api import ApiError, RestApi


def expect_error(call, code: str, *fragments: str):
    with pytest.raises(ApiError) as info:
        call()
    assert info.value.code == code, info.value
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message
    return info.value


def test_predict_on_raw_jpeg_bytes_returns_labels_and_probabilities(api, cat_jpeg):
    version, out = api.predict([cat_jpeg, cat_jpeg])
    assert set(out) == {"probabilities", "classes", "labels", "logits"}
    assert out["probabilities"].shape == (2, 2)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, atol=1e-6)
    assert set(out["labels"]) <= {"cat", "dog"}
    assert out["labels"][0] == ["cat", "dog"][int(out["classes"][0])]
    assert version in (None, 1)


def test_version_and_label_addressing(api, cat_jpeg):
    _, by_version = api.predict([cat_jpeg], version=1)
    _, latest = api.predict([cat_jpeg])
    np.testing.assert_allclose(by_version["probabilities"], latest["probabilities"], atol=1e-6)


def test_model_status_reports_available(api):
    assert api.status() == [(1, "AVAILABLE", 0)]
    assert api.status(version=1) == [(1, "AVAILABLE", 0)]


def test_metadata_shows_the_signatures(api):
    signatures = api.signature_inputs()
    assert signatures["serving_default"] == {"image_bytes": "string"}
    assert signatures["predict_images"] == {"images": "float32"}
    # get_model_metadata_impl.cc copies every SignatureDef, the init op's included.
    assert "__saved_model_init_op" in signatures


def test_unknown_model_or_version_is_not_found(api, cat_jpeg):
    expect_error(lambda: api.predict([cat_jpeg], model="nope"), "NOT_FOUND", "nope")
    expect_error(lambda: api.predict([cat_jpeg], version=42), "NOT_FOUND", "42")
    expect_error(lambda: api.status(model="nope"), "NOT_FOUND", "nope")
    expect_error(lambda: api.status(version=42), "NOT_FOUND", "42")


def test_unknown_label_is_invalid_argument(api, cat_jpeg):
    expect_error(lambda: api.predict([cat_jpeg], label="canary"), "INVALID_ARGUMENT", "canary")


def test_unknown_signature_is_refused(api, cat_jpeg):
    # gRPC: FAILED_PRECONDITION; REST checks the name first and answers INVALID_ARGUMENT; both 400.
    with pytest.raises(ApiError) as info:
        api.predict([cat_jpeg], signature="nope")
    assert info.value.code in ("FAILED_PRECONDITION", "INVALID_ARGUMENT") and "nope" in info.value.message
    if not isinstance(api, RestApi):
        assert info.value.code == "FAILED_PRECONDITION"


def test_wrong_input_name_or_dtype_is_invalid_argument(api, cat_jpeg):
    expect_error(lambda: api.predict([cat_jpeg], input_name="pixels"), "INVALID_ARGUMENT", "pixels")
    expect_error(lambda: api.predict(None, values=[1.5, 2.5]), "INVALID_ARGUMENT")


@pytest.mark.parametrize("payload,fragment", [(b"definitely not an image", "not a JPEG, PNG, GIF or BMP"),
                                              (b"", "empty")])
def test_undecodable_image_is_invalid_argument_and_the_server_keeps_serving(api, cat_jpeg, payload, fragment):
    expect_error(lambda: api.predict([payload]), "INVALID_ARGUMENT", fragment)
    _, out = api.predict([cat_jpeg])
    assert out["probabilities"].shape == (1, 2)


def test_rest_status_document_has_tf_servings_shape(rest_api):
    assert rest_api.status_document() == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


def test_rest_malformed_json_is_a_400_with_an_error_field(rest_api):
    response = rest_api.session.post(rest_api._url("pets") + ":predict", data=b"{oops", timeout=30)
    assert response.status_code == 400 and "error" in response.json()
    response = rest_api.session.post(rest_api._url("pets") + ":predict", data=json.dumps({"instances": []}),
                                     timeout=30)
    assert response.status_code == 400

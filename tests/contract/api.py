"""Two thin adapters over TF Serving's APIs (raw protos and raw HTTP, not this project's
client), so that one set of assertions checks the local server and TF Serving alike."""
from __future__ import annotations

import base64

import grpc
import numpy as np
import requests
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)

from model_api.status import code_for_http_status, code_name


class ApiError(Exception):
    def __init__(self, code: str, message: str, http: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.http = code, message, http


def _spec(model, version=None, label=None, signature=None):
    spec = model_pb2.ModelSpec(name=model, signature_name=signature or "")
    if version is not None:
        spec.version.value = version
    if label is not None:
        spec.version_label = label
    return spec


class GrpcApi:
    name = "grpc"

    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None = None,
                 server_name: str | None = None):
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        self.channel = (grpc.secure_channel(target, credentials, options=options) if credentials
                        else grpc.insecure_channel(target))
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def _call(self, method, request):
        try:
            return method(request, timeout=60)
        except grpc.RpcError as err:
            raise ApiError(err.code().name, err.details()) from None

    def predict(self, images, model="pets", version=None, label=None, signature=None, input_name="image_bytes",
                values=None):
        request = predict_pb2.PredictRequest(model_spec=_spec(model, version, label, signature))
        tensor = tf.make_tensor_proto(values if values is not None else images)
        request.inputs[input_name].CopyFrom(tensor)
        response = self._call(self.predictions.Predict, request)
        outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        if "labels" in outputs:
            outputs["labels"] = np.array([x.decode() for x in outputs["labels"]])
        return response.model_spec.version.value, outputs

    def status(self, model="pets", version=None, label=None):
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=_spec(model, version, label))
        response = self._call(self.models.GetModelStatus, request)
        return [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                 code_name(s.status.error_code) if s.status.error_code else 0) for s in response.model_version_status]

    def signature_inputs(self, model="pets"):
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=_spec(model),
                                                                 metadata_field=["signature_def"])
        response = self._call(self.predictions.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return {name: {alias: tf.dtypes.as_dtype(info.dtype).name for alias, info in sd.inputs.items()}
                for name, sd in signatures.signature_def.items()}


class RestApi:
    name = "rest"

    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")
        self.session = requests.Session()

    def _url(self, model, version=None, label=None):
        url = f"{self.base}/v1/models/{model}"
        if version is not None:
            url += f"/versions/{version}"
        if label is not None:
            url += f"/labels/{label}"
        return url

    def _check(self, response):
        if response.status_code != 200:
            message = response.json().get("error", "")
            code = code_for_http_status(response.status_code, message)
            raise ApiError(code, message, http=response.status_code)
        return response.json()

    def predict(self, images, model="pets", version=None, label=None, signature=None, input_name="image_bytes",
                values=None, raw_body=None):
        if values is not None:
            body = {"instances": [{input_name: v} for v in values]}
        else:
            body = {"instances": [{input_name: {"b64": base64.b64encode(i).decode()}} for i in images]}
        if signature:
            body["signature_name"] = signature
        response = self.session.post(self._url(model, version, label) + ":predict",
                                     data=raw_body if raw_body is not None else None,
                                     json=None if raw_body is not None else body, timeout=60)
        rows = self._check(response)["predictions"]
        outputs = {key: np.array([row[key] for row in rows]) for key in rows[0]} if rows else {}
        return None, outputs

    def status(self, model="pets", version=None, label=None):
        document = self._check(self.session.get(self._url(model, version, label), timeout=30))
        return [(int(s["version"]), s["state"], 0 if s["status"]["error_code"] == "OK" else s["status"]["error_code"])
                for s in document["model_version_status"]]

    def status_document(self, model="pets"):
        return self._check(self.session.get(self._url(model), timeout=30))

    def signature_inputs(self, model="pets"):
        document = self._check(self.session.get(self._url(model) + "/metadata", timeout=30))
        signatures = document["metadata"]["signature_def"]["signature_def"]
        return {name: {alias: info["dtype"].replace("DT_", "").lower().replace("float", "float32")
                       for alias, info in sd["inputs"].items()} for name, sd in signatures.items()}

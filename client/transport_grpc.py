"""gRPC transport: TF Serving's PredictionService and ModelService via tensorflow-serving-api stubs."""
from __future__ import annotations

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)

from client.options import CallOptions
from client.results import ServerError, VersionStatus
from client.retry import with_retries
from model_api import signature as sig


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


# What a PredictRequest adds to its images: the model spec and the input's TensorProto header,
# and per image a string_val tag and length varint (at most 6 bytes), rounded up.
_REQUEST_OVERHEAD = 1024
_IMAGE_OVERHEAD = 16
# Target schemes that name a resolver (gRPC's naming doc): dns:///svc:8500 resolves to every
# address of the name (a headless Service: one per pod), ipv4:/ipv6: list addresses.
_RESOLVER_SCHEMES = ("dns:", "ipv4:", "ipv6:")


def build_channel_options(target: str, options: CallOptions) -> list[tuple[str, object]]:
    """The receive limit, and round_robin over every resolved address for a resolver target:
    gRPC's default, pick_first, would send everything to the first address. The send side is
    left unlimited (gRPC's default): the client's per-request byte budget decides what it sends."""
    channel = [("grpc.max_receive_message_length", options.max_message_bytes)]
    if target.startswith(_RESOLVER_SCHEMES):
        channel.append(("grpc.lb_policy_name", "round_robin"))
    return channel


def _code_name(status) -> str:
    enum = status.DESCRIPTOR.fields_by_name["error_code"].enum_type
    value = enum.values_by_number.get(status.error_code)
    return value.name if value else str(status.error_code)


class GrpcTransport:
    """Retries UNAVAILABLE and DEADLINE_EXCEEDED with jittered exponential backoff, each attempt with a
    fresh deadline (client/retry.py). gRPC's own retry policy cannot renew a deadline and caps
    attempts at 5, so the client does it."""

    name = "grpc"

    def __init__(self, target: str, options: CallOptions):
        self.target = target
        self.options = options
        channel_options = build_channel_options(target, options)
        compression = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}.get(options.compression)
        if options.tls_ca or options.tls_cert:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(options.tls_ca), private_key=_read(options.tls_key),
                certificate_chain=_read(options.tls_cert))
            if options.tls_server_name:
                channel_options.append(("grpc.ssl_target_name_override", options.tls_server_name))
            self.channel = grpc.secure_channel(target, credentials, options=channel_options, compression=compression)
        else:
            self.channel = grpc.insecure_channel(target, options=channel_options, compression=compression)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def request_bytes(self, sizes) -> int:
        """The serialized PredictRequest's size, near enough (the images are most of it)."""
        return _REQUEST_OVERHEAD + sum(size + _IMAGE_OVERHEAD for size in sizes)

    def _spec(self, signature: bool = True) -> model_pb2.ModelSpec:
        o = self.options
        spec = model_pb2.ModelSpec(name=o.model, signature_name=(o.signature or sig.SERVING_DEFAULT) if signature else "")
        if o.version is not None:
            spec.version.value = o.version
        elif o.label:
            spec.version_label = o.label
        return spec

    def _call(self, method, request):
        def attempt():
            try:
                return method(request, timeout=self.options.timeout, wait_for_ready=self.options.wait_for_ready)
            except grpc.RpcError as err:
                raise ServerError(err.code().name, err.details() or "") from None

        return with_retries(attempt, self.options)

    def predict(self, images: list[bytes]) -> tuple[int | None, dict]:
        request = predict_pb2.PredictRequest(model_spec=self._spec())
        request.inputs[sig.INPUT_IMAGE_BYTES].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
        response = self._call(self._predictions.Predict, request)
        outputs = {key: tf.make_ndarray(value) for key, value in response.outputs.items()}
        if sig.OUTPUT_LABELS in outputs:
            outputs[sig.OUTPUT_LABELS] = [x.decode("utf-8", "replace") for x in outputs[sig.OUTPUT_LABELS]]
        return response.model_spec.version.value or None, outputs

    def status(self) -> list[VersionStatus]:
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=self._spec(signature=False))
        response = self._call(self._models.GetModelStatus, request)
        state = get_model_status_pb2.ModelVersionStatus.State.Name
        return [VersionStatus(s.version, state(s.state), _code_name(s.status), s.status.error_message)
                for s in response.model_version_status]

    def metadata(self) -> dict:
        from google.protobuf import json_format

        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=self._spec(signature=False),
                                                                 metadata_field=["signature_def"])
        response = self._call(self._predictions.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return {"model_spec": json_format.MessageToDict(response.model_spec, preserving_proto_field_name=True),
                "metadata": {"signature_def": json_format.MessageToDict(signatures, preserving_proto_field_name=True)}}

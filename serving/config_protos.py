"""TF Serving config messages that tensorflow-serving-api does not ship, for text-format parsing.

Built from the field names, numbers and types of
- tensorflow_serving/config/ssl_config.proto (SSLConfig, read by --ssl_config_file),
- tensorflow_serving/servables/tensorflow/session_bundle_config.proto (BatchingParameters,
  read by --batching_parameters_file),
- tensorflow_serving/config/monitoring_config.proto (MonitoringConfig),
so protobuf's own text_format reads these files exactly as TF Serving's ParseProtoTextFile does:
comments, quoting, string concatenation and escapes included, unknown fields refused.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_INT64_VALUE = ".google.protobuf.Int64Value"
_STRING_VALUE = ".google.protobuf.StringValue"
_BOOL_VALUE = ".google.protobuf.BoolValue"

# message name -> [(field name, number, type, label, message type)], as in the .proto files.
_MESSAGES = {
    "SSLConfig": [
        ("server_key", 1, _F.TYPE_STRING, _OPTIONAL, None),
        ("server_cert", 2, _F.TYPE_STRING, _OPTIONAL, None),
        ("custom_ca", 3, _F.TYPE_STRING, _OPTIONAL, None),
        ("client_verify", 4, _F.TYPE_BOOL, _OPTIONAL, None),
    ],
    "BatchingParameters": [
        ("max_batch_size", 1, _F.TYPE_MESSAGE, _OPTIONAL, _INT64_VALUE),
        ("batch_timeout_micros", 2, _F.TYPE_MESSAGE, _OPTIONAL, _INT64_VALUE),
        ("max_enqueued_batches", 3, _F.TYPE_MESSAGE, _OPTIONAL, _INT64_VALUE),
        ("num_batch_threads", 4, _F.TYPE_MESSAGE, _OPTIONAL, _INT64_VALUE),
        ("thread_pool_name", 5, _F.TYPE_MESSAGE, _OPTIONAL, _STRING_VALUE),
        ("allowed_batch_sizes", 6, _F.TYPE_INT64, _REPEATED, None),
        ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, _OPTIONAL, None),
        ("enable_large_batch_splitting", 8, _F.TYPE_MESSAGE, _OPTIONAL, _BOOL_VALUE),
        ("max_execution_batch_size", 9, _F.TYPE_MESSAGE, _OPTIONAL, _INT64_VALUE),
    ],
    "PrometheusConfig": [
        ("enable", 1, _F.TYPE_BOOL, _OPTIONAL, None),
        ("path", 2, _F.TYPE_STRING, _OPTIONAL, None),
    ],
    "MonitoringConfig": [
        ("prometheus_config", 1, _F.TYPE_MESSAGE, _OPTIONAL, ".tensorflow.serving.PrometheusConfig"),
    ],
}


def _build() -> dict:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(name="tensorflow_serving_config_mirror.proto",
                                              package="tensorflow.serving", syntax="proto3",
                                              dependency=["google/protobuf/wrappers.proto"])
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            message.field.add(name=field_name, number=number, type=kind, label=label, type_name=type_name)
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
            for name in _MESSAGES}


_CLASSES = _build()
SSLConfig = _CLASSES["SSLConfig"]
BatchingParameters = _CLASSES["BatchingParameters"]
MonitoringConfig = _CLASSES["MonitoringConfig"]


def parse_text_file(path: str, message_class):
    """ParseProtoTextFile: the file's text format into a new message; ValueError naming the
    file and the problem (unknown field, bad value, syntax) when it does not parse."""
    with open(path) as f:
        text = f.read()
    try:
        return text_format.Parse(text, message_class())
    except text_format.ParseError as err:
        raise ValueError(f"{path}: not a valid {message_class.DESCRIPTOR.name}: {err}") from None

"""BatchingParameters and MonitoringConfig, which tensorflow-serving-api does not ship.

Built from the field lists of tensorflow_serving/servables/tensorflow/session_bundle_config.proto
and tensorflow_serving/config/monitoring_config.proto, so the text-format files in
serving/config/ are checked against the same names and types TF Serving parses.
"""
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

F = descriptor_pb2.FieldDescriptorProto


def _build():
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(name="tf_serving_mirror.proto", package="tensorflow.serving",
                                              syntax="proto3", dependency=["google/protobuf/wrappers.proto"])

    def message(name, fields):
        m = file.message_type.add(name=name)
        for number, (field_name, kind, label, type_name) in enumerate(fields, start=1):
            m.field.add(name=field_name, number=number, type=kind, label=label, type_name=type_name)

    optional, repeated = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    int64_value, string_value = ".google.protobuf.Int64Value", ".google.protobuf.StringValue"
    message("BatchingParameters", [
        ("max_batch_size", F.TYPE_MESSAGE, optional, int64_value),
        ("batch_timeout_micros", F.TYPE_MESSAGE, optional, int64_value),
        ("max_enqueued_batches", F.TYPE_MESSAGE, optional, int64_value),
        ("num_batch_threads", F.TYPE_MESSAGE, optional, int64_value),
        ("thread_pool_name", F.TYPE_MESSAGE, optional, string_value),
        ("allowed_batch_sizes", F.TYPE_INT64, repeated, None),
        ("pad_variable_length_inputs", F.TYPE_BOOL, optional, None),
    ])
    message("PrometheusConfig", [("enable", F.TYPE_BOOL, optional, None), ("path", F.TYPE_STRING, optional, None)])
    message("MonitoringConfig", [("prometheus_config", F.TYPE_MESSAGE, optional, ".tensorflow.serving.PrometheusConfig")])
    pool.Add(file)
    get = lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
    return get("BatchingParameters"), get("MonitoringConfig")


BatchingParameters, MonitoringConfig = _build()

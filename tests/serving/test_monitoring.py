"""What a TF Serving operator reads and drives: the Prometheus page, the gRPC health service,
and ModelService.HandleReloadConfigRequest."""
import base64
import shutil
import threading

import grpc
import pytest
import requests
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (get_model_status_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import failed_precondition
from serving.monitoring import DEFAULT_PROMETHEUS_PATH, ServingMetrics, prometheus_path
from tests.conftest import free_port, start_local_server

ENABLED = 'prometheus_config {\n  enable: true\n  path: "%s"\n}\n'


def monitoring_config(tmp_path, text: str) -> str:
    path = tmp_path / "monitoring.config"
    path.write_text(text)
    return str(path)


def page_values(text: str) -> dict:
    """'name{labels} value' lines -> {'name{labels}': value}."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values


def predict_request(name: str, jpeg: bytes) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([jpeg]))
    return request


def test_a_hundred_requests_show_on_the_prometheus_page_by_model_version_and_api(model_base, cat_jpeg, tmp_path):
    metrics = ServingMetrics()
    server = start_local_server(model_base, metrics=metrics,
                                metrics_path=prometheus_path(monitoring_config(tmp_path, ENABLED % DEFAULT_PROMETHEUS_PATH)),
                                registry_options={"on_event": metrics.on_model_event})
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        for _ in range(60):
            stub.Predict(predict_request("pets", cat_jpeg), timeout=30)
        body = {"instances": [{"b64": base64.b64encode(cat_jpeg).decode()}]}
        for _ in range(40):
            assert requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/pets:predict", json=body,
                                 timeout=30).status_code == 200
        with pytest.raises(grpc.RpcError):
            stub.Predict(predict_request("nope", cat_jpeg), timeout=30)
        page = requests.get(f"http://127.0.0.1:{server.rest_port}{DEFAULT_PROMETHEUS_PATH}", timeout=30)
    finally:
        server.stop()
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/plain")
    assert "# TYPE :tensorflow:serving:request_count counter" in page.text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in page.text
    values = page_values(page.text)
    # TF Serving's own metrics (servables/tensorflow/util.cc), labels as there.
    assert values[':tensorflow:serving:request_count{model_name="pets",status="OK"}'] == 100
    assert values[':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"}'] == 1
    grpc_latency = 'model_name="pets",API="Predict",entrypoint="GRPC"'
    assert values[f":tensorflow:serving:request_latency_count{{{grpc_latency}}}"] == 60
    assert values[f':tensorflow:serving:request_latency_bucket{{{grpc_latency},le="+Inf"}}'] == 60
    assert values[':tensorflow:serving:request_latency_count{model_name="pets",API="predict",entrypoint="REST"}'] == 40
    # Beyond TF Serving: by version, and the registry's load events.
    assert values[':transfer_serve:request_count{model_name="pets",version="1",API="Predict",entrypoint="GRPC",'
                  'status="OK"}'] == 60
    assert values[':transfer_serve:request_latency_count{model_name="pets",version="1",API="predict",'
                  'entrypoint="REST"}'] == 40
    assert values[':transfer_serve:model_load_attempt_count{model_name="pets",version="1",status="OK"}'] == 1


def test_the_page_is_served_only_when_the_monitoring_config_enables_it(model_base, tmp_path):
    assert prometheus_path(None) is None
    assert prometheus_path(monitoring_config(tmp_path, "prometheus_config { enable: false }")) is None
    assert prometheus_path(monitoring_config(tmp_path, "prometheus_config { enable: true }")) == DEFAULT_PROMETHEUS_PATH
    with pytest.raises(ValueError, match="not a valid MonitoringConfig"):
        prometheus_path(monitoring_config(tmp_path, "prometheus { enable: true }"))
    server = start_local_server(model_base, metrics_path=prometheus_path(monitoring_config(tmp_path, ENABLED % "/m")))
    try:
        base = f"http://127.0.0.1:{server.rest_port}"
        assert requests.get(f"{base}/m", timeout=30).status_code == 200
        assert requests.get(f"{base}{DEFAULT_PROMETHEUS_PATH}", timeout=30).status_code == 404
    finally:
        server.stop()


def test_two_servers_in_one_process_keep_their_own_counts():
    import time

    first, second = ServingMetrics(), ServingMetrics()
    first.record_request("pets", 1, "Predict", "GRPC", "OK", time.perf_counter())
    assert 'request_count{model_name="pets",status="OK"} 1' in first.render()
    assert "pets" not in second.render()


def health_stub(server):
    return health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))


def test_grpc_health_answers_serving_then_not_serving_while_stopping(model_base):
    server = start_local_server(model_base, grpc_health=True)
    stub = health_stub(server)
    stopper = threading.Thread(target=server.stop)
    try:
        for service in ("", "ModelService", "PredictionService"):  # the names server.cc sets
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService"), timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        stopper.start()
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
    finally:
        if stopper.ident is None:
            server.stop()
        stopper.join(60)


def test_grpc_health_is_off_unless_enabled_as_in_tf_serving(local_server):
    with pytest.raises(grpc.RpcError) as info:
        health_stub(local_server).Check(health_pb2.HealthCheckRequest(), timeout=30)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


class ReloadOnlyRegistry:
    """The registry surface HandleReloadConfigRequest uses, recording what it was given."""

    def __init__(self, refuse: bool = False):
        self.refuse = refuse
        self.reloads = []

    def start(self):
        pass

    def stop(self):
        pass

    def model_names(self):
        return []

    def reload_config(self, configs):
        if self.refuse:
            raise failed_precondition("Cannot transition model pets to platform other")
        self.reloads.append([(c.name, c.base_path) for c in configs])


def reload_request(*names) -> model_management_pb2.ReloadConfigRequest:
    request = model_management_pb2.ReloadConfigRequest()
    for name in names:
        request.config.model_config_list.config.add(name=name, base_path=f"/models/{name}", model_platform="tensorflow")
    return request


def serve_registry(registry):
    from serving.server import LocalServer

    return LocalServer(registry, grpc_port=free_port(), rest_port=0, grace_seconds=5).start()


def test_reload_config_request_hands_the_model_list_to_the_registry():
    registry = ReloadOnlyRegistry()
    server = serve_registry(registry)
    try:
        stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        request = reload_request("pets", "cats")
        request.metric_names.append("/tensorflow/serving/request_count")
        response = stub.HandleReloadConfigRequest(request, timeout=30)
        assert response.status.error_code == 0 and response.status.error_message == ""
        assert registry.reloads == [[("pets", "/models/pets"), ("cats", "/models/cats")]]
        assert [(m.name, m.int64_value_increase) for m in response.metric] == [("/tensorflow/serving/request_count", 0)]
        custom = model_management_pb2.ReloadConfigRequest()
        custom.config.custom_model_config.Pack(model_server_config_pb2.ModelConfig())
        with pytest.raises(grpc.RpcError) as info:
            stub.HandleReloadConfigRequest(custom, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == ("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                                        "Only ModelConfigList is currently supported")
    finally:
        server.stop()


def test_a_refused_reload_answers_the_registrys_code_and_message():
    server = serve_registry(ReloadOnlyRegistry(refuse=True))
    try:
        stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        with pytest.raises(grpc.RpcError) as info:
            stub.HandleReloadConfigRequest(reload_request("pets"), timeout=30)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert info.value.details() == "Cannot transition model pets to platform other"
    finally:
        server.stop()


def wait_until_available(stub, name: str) -> bool:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            status = stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec={"name": name}),
                                         timeout=30)
            if [v.state for v in status.model_version_status] == [get_model_status_pb2.ModelVersionStatus.AVAILABLE]:
                return True
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
        time.sleep(0.1)
    return False


def test_reload_config_request_adds_a_second_model_without_a_restart(model_base, cat_jpeg, tmp_path):
    from serving.registry import ModelRegistry

    if not hasattr(ModelRegistry, "reload_config"):
        pytest.skip("ModelRegistry.reload_config has not landed yet (the registry change)")
    base = tmp_path / "models"
    shutil.copytree(model_base / "pets", base / "pets")
    server = start_local_server(base)
    try:
        shutil.copytree(model_base / "pets", base / "cats")
        stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        request = model_management_pb2.ReloadConfigRequest()
        for name in ("pets", "cats"):
            request.config.model_config_list.config.add(name=name, base_path=str(base / name),
                                                        model_platform="tensorflow")
        assert stub.HandleReloadConfigRequest(request, timeout=120).status.error_code == 0
        assert wait_until_available(stub, "cats")
        predict = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        response = predict.Predict(predict_request("cats", cat_jpeg), timeout=30)
        assert response.model_spec.name == "cats"
    finally:
        server.stop()


def test_model_server_flags_serve_metrics_health_and_reread_the_config_file(model_base, cat_jpeg, tmp_path):
    """--monitoring_config_file, --enable_grpc_healthcheck_service and
    --model_config_file_poll_wait_seconds, end to end through the command line."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    base = tmp_path / "models"
    shutil.copytree(model_base / "pets", base / "pets")
    shutil.copytree(model_base / "pets", base / "cats")
    entry = 'config {{ name: "{0}" base_path: "{1}/{0}" model_platform: "tensorflow" }}\n'
    config = tmp_path / "models.config"
    config.write_text("model_config_list {\n" + entry.format("pets", base) + "}\n")
    grpc_port, rest_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
         f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1",
         f"--monitoring_config_file={monitoring_config(tmp_path, ENABLED % DEFAULT_PROMETHEUS_PATH)}",
         "--enable_grpc_healthcheck_service=true", "--tensorflow_intra_op_parallelism=1",
         "--tensorflow_inter_op_parallelism=1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        assert "model-server ready" in process.stdout.readline()
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30).status == \
            health_pb2.HealthCheckResponse.SERVING
        config.write_text("model_config_list {\n" + entry.format("pets", base) + entry.format("cats", base) + "}\n")
        assert wait_until_available(model_service_pb2_grpc.ModelServiceStub(channel), "cats")
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(predict_request("cats", cat_jpeg),
                                                                           timeout=30)
        page = requests.get(f"http://127.0.0.1:{rest_port}{DEFAULT_PROMETHEUS_PATH}", timeout=30).text
        values = page_values(page)
        assert values[':tensorflow:serving:request_count{model_name="cats",status="OK"}'] == 1
        assert values[':transfer_serve:model_load_attempt_count{model_name="cats",version="1",status="OK"}'] == 1
    finally:
        process.terminate()
        try:
            process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0

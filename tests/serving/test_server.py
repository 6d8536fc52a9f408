"""The local server as a process: limits, clean errors, graceful shutdown, the CLI."""
import base64
import json
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.conftest import REPO, free_port, start_local_server


def test_rest_body_over_the_limit_is_a_clear_413(model_base):
    server = start_local_server(model_base, max_request_bytes=4096)
    try:
        body = json.dumps({"instances": [{"b64": base64.b64encode(b"x" * 10_000).decode()}]})
        response = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/pets:predict", data=body, timeout=30)
        assert response.status_code == 413
        assert "exceeds the limit of 4096 bytes" in response.json()["error"]
    finally:
        server.stop()


def test_grpc_message_over_the_limit_is_resource_exhausted(model_base):
    server = start_local_server(model_base, max_request_bytes=4096)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "pets"
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([b"x" * 10_000]))
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in info.value.details()
    finally:
        server.stop()


def test_unknown_paths_and_methods_are_malformed_requests(local_server):
    base = f"http://127.0.0.1:{local_server.rest_port}"
    response = requests.get(f"{base}/v1/models/pets:predict", timeout=30)
    assert response.status_code == 400 and "Malformed request" in response.json()["error"]
    response = requests.post(f"{base}/v1/models/pets:classify", json={"examples": []}, timeout=30)
    assert response.status_code == 400


def test_model_server_starts_serves_and_stops_gracefully_on_sigterm(model_base, cat_jpeg):
    grpc_port, rest_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
         "--model_name=pets", f"--model_base_path={model_base / 'pets'}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        url = f"http://127.0.0.1:{rest_port}/v1/models/pets"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.3)
        body = {"instances": [{"b64": base64.b64encode(cat_jpeg).decode()}]}
        assert requests.post(url + ":predict", json=body, timeout=30).status_code == 200
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err[-2000:]
    assert "model-server ready" in out and "shutting down" in err


def test_model_server_needs_a_model(tmp_path):
    result = subprocess.run([sys.executable, "-m", "serving", "--port=0"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "--model_base_path" in result.stderr


def test_stop_lets_a_request_in_flight_finish(model_base, cat_jpeg):
    import threading

    server = start_local_server(model_base)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "pets"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([cat_jpeg] * 1500))  # takes seconds to answer
    future = stub.Predict.future(request, timeout=120)
    answered = []
    future.add_done_callback(lambda _: answered.append(time.monotonic()))
    time.sleep(0.3)
    stop_called = time.monotonic()
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    response = future.result()
    stopper.join()
    assert answered[0] > stop_called, "the request must still have been in flight when stop() began"
    assert tf.make_ndarray(response.outputs["probabilities"]).shape == (1500, 2)


def test_garbage_never_takes_the_server_down(local_server, cat_jpeg):
    import random

    rng = random.Random(0)
    channel = grpc.insecure_channel(f"127.0.0.1:{local_server.grpc_port}")
    raw_predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                      request_serializer=lambda b: b, response_deserializer=lambda b: b)
    rest = f"http://127.0.0.1:{local_server.rest_port}/v1/models/pets:predict"
    for _ in range(30):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        with pytest.raises(grpc.RpcError) as info:
            raw_predict(junk, timeout=30)
        assert info.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT,
                                     grpc.StatusCode.NOT_FOUND)
        response = requests.post(rest, data=junk, timeout=30)
        assert 400 <= response.status_code < 500 and "error" in response.json()
    for body in ({"instances": [[1, 2], "x"]}, {"instances": [{"image_bytes": {"b64": 5}}]}, {"inputs": {"x": 1}},
                 {"instances": [{"b64": base64.b64encode(b"\xff\xd8\xff" + b"\x00" * 50).decode()}]}):
        response = requests.post(rest, json=body, timeout=30)
        assert response.status_code == 400 and response.json()["error"], body
    good = requests.post(rest, json={"instances": [{"b64": base64.b64encode(cat_jpeg).decode()}]}, timeout=30)
    assert good.status_code == 200 and len(good.json()["predictions"]) == 1


def test_a_url_model_base_path_is_kept_as_given_and_checked_through_gfile(tmp_path, caplog, monkeypatch):
    import logging

    import tensorflow as tf

    from serving.__main__ import absolute_base_path, warn_about_missing_base_paths
    from serving.registry import single_model_config

    assert absolute_base_path("gs://bucket/models/pets") == "gs://bucket/models/pets"
    assert absolute_base_path("s3://bucket/pets") == "s3://bucket/pets"
    monkeypatch.chdir(tmp_path)
    assert absolute_base_path("models/pets") == str(tmp_path / "models" / "pets")
    tf.io.gfile.makedirs("ram://served/pets")
    with caplog.at_level(logging.WARNING):
        warn_about_missing_base_paths([single_model_config("pets", "ram://served/pets"),
                                       single_model_config("cats", "ram://served/cats")])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["model cats: base path ram://served/cats does not exist yet; waiting for versions"]


def test_grpc_messages_are_cut_at_1024_characters_and_rest_messages_are_not(local_server):
    name = "m" * 2000  # NOT_FOUND names the model: "Servable not found for request: Latest(mmm...)"
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{local_server.grpc_port}"))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([b"x"]))
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=30)
    # grpc_status_util.cc ToGRPCStatus: the first 1024 characters, then "...TRUNCATED".
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(info.value.details()) == 1024 + len("...TRUNCATED")
    assert info.value.details().endswith("m...TRUNCATED")
    response = requests.get(f"http://127.0.0.1:{local_server.rest_port}/v1/models/{name}", timeout=30)
    assert response.status_code == 404 and name in response.json()["error"]


def test_an_internal_failure_sends_an_incident_id_not_the_exception_text(model_base, cat_jpeg, monkeypatch, caplog):
    from serving import handlers, rest_server

    def broken(*_):
        raise RuntimeError("secret detail /srv/internal/path")

    monkeypatch.setattr(handlers, "predict", broken)
    monkeypatch.setattr(rest_server, "run_predict", broken)
    server = start_local_server(model_base)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "pets"
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([cat_jpeg]))
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request, timeout=30)
        response = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/pets:predict",
                                 json={"instances": [{"b64": base64.b64encode(cat_jpeg).decode()}]}, timeout=30)
    finally:
        server.stop()
    assert info.value.code() == grpc.StatusCode.INTERNAL and response.status_code == 500
    for message in (info.value.details(), response.json()["error"]):
        assert "secret" not in message and "incident" in message
        incident = message.rsplit(" ", 1)[-1].rstrip(")")
        assert any(incident in r.getMessage() and r.exc_info for r in caplog.records), "not in the server log"


def test_the_rest_path_is_decoded_once_as_tf_serving_does(local_server):
    base = f"http://127.0.0.1:{local_server.rest_port}/v1/models"
    # http_rest_api_util.cc DecodeArg runs once on the path as sent: %2574 is "%74", not "t".
    response = requests.get(f"{base}/pe%2574s", timeout=30)
    assert response.status_code == 404 and response.json()["error"].endswith(" model pe%74s")
    response = requests.get(f"{base}/a%2Fb", timeout=30)  # an encoded slash belongs to the name
    assert response.status_code == 404 and response.json()["error"].endswith(" model a/b")
    assert requests.get(f"{base}/p%65ts", timeout=30).status_code == 200


def test_the_arguments_dockerfile_serve_gives_tf_serving_are_accepted():
    import re
    import shlex

    from serving.__main__ import build_parser

    text = (REPO / "Dockerfile.serve").read_text()
    entrypoint = re.search(r"ENTRYPOINT \[(.*?)\]", text, re.DOTALL).group(1)
    arguments = [a for a in shlex.split(entrypoint.replace("\\\n", " ").replace(",", " ")) if a.startswith("--")]
    assert "--model_config_file_poll_wait_seconds=60" in arguments  # the list really was read
    args = build_parser().parse_args(arguments)
    assert args.monitoring_config_file == "/config/monitoring.config"
    assert build_parser().parse_args(["--tensorflow_intra_op_parallelism=2",
                                      "--tensorflow_inter_op_parallelism=1"]).tensorflow_intra_op_parallelism == 2


def test_all_three_parallelism_flags_are_refused_as_tf_serving_does(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "serving", f"--model_base_path={tmp_path}", "--tensorflow_session_parallelism=2",
         "--tensorflow_intra_op_parallelism=2", "--tensorflow_inter_op_parallelism=2"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "You cannot configure all." in result.stderr and "Traceback" not in result.stderr

"""Overload and process faults: the gRPC and REST limits answer at once instead of queueing,
the REST timeout, both front ends draining together, and a failed REST bind leaving nothing running.

A "slow servable" here is the real predict behind a gate the test opens: requests are held in
flight for exactly as long as the test needs, so nothing depends on timing."""
import base64
import contextlib
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import handlers, rest_server
from tests.conftest import free_port, start_local_server

WAIT = 60  # seconds any single step may take on a loaded machine before the test fails


class Gate:
    """Wraps a function so each call counts itself in, then waits until the test opens the gate."""

    def __init__(self, function):
        self.function = function
        self.opened = threading.Event()
        self.entered = threading.Semaphore(0)

    def __call__(self, *args, **kwargs):
        self.entered.release()
        if not self.opened.wait(WAIT):
            raise RuntimeError("the test never opened the gate")
        return self.function(*args, **kwargs)

    def wait_for_entries(self, count: int) -> None:
        for _ in range(count):
            assert self.entered.acquire(timeout=WAIT), "a request never reached the servable"


@contextlib.contextmanager
def gated_server(model_base, monkeypatch, module, name: str, **flags):
    """A local server whose `module.name` (a predict step) waits at a Gate: yields (gate, server);
    the gate is opened and the server stopped however the test ends."""
    gate = Gate(getattr(module, name))
    monkeypatch.setattr(module, name, gate)
    server = start_local_server(model_base, **flags)
    try:
        yield gate, server
    finally:
        gate.opened.set()
        server.stop()


def rest_predict_url(server) -> str:
    return f"http://127.0.0.1:{server.rest_port}/v1/models/pets:predict"


def predict_request(jpeg: bytes) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "pets"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([jpeg]))
    return request


def rest_body(jpeg: bytes) -> dict:
    return {"instances": [{"b64": base64.b64encode(jpeg).decode()}]}


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_grpc_rpcs_over_grpc_max_threads_get_resource_exhausted_while_admitted_ones_succeed(
        model_base, cat_jpeg, monkeypatch):
    with gated_server(model_base, monkeypatch, handlers, "predict", threads=2) as (gate, server):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        sent = time.perf_counter()
        admitted = [stub.Predict.future(predict_request(cat_jpeg), timeout=WAIT) for _ in range(2)]
        gate.wait_for_entries(2)
        refusals = []
        for _ in range(3):  # answered while both admitted requests are still held: no queue
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(predict_request(cat_jpeg), timeout=WAIT)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            refusals.append(time.perf_counter() - sent)
        assert not any(future.done() for future in admitted)
        gate.opened.set()
        latencies = []
        for future in admitted:
            assert tf.make_ndarray(future.result().outputs["probabilities"]).shape == (1, 2)
            latencies.append(time.perf_counter() - sent)
        print(f"\ngRPC: refusals answered after {max(refusals) * 1000:.1f} ms at most; admitted p99 "
              f"{percentile(latencies, 0.99) * 1000:.1f} ms (held by the gate until then)")


def test_rest_requests_over_the_limit_get_429_at_once(model_base, cat_jpeg, monkeypatch):
    with gated_server(model_base, monkeypatch, rest_server, "run_predict",
                      rest_threads=2, rest_max_in_flight=2) as (gate, server):
        url = rest_predict_url(server)
        with ThreadPoolExecutor(2) as clients:
            admitted = [clients.submit(requests.post, url, json=rest_body(cat_jpeg), timeout=WAIT) for _ in range(2)]
            gate.wait_for_entries(2)
            refused = requests.post(url, json=rest_body(cat_jpeg), timeout=WAIT)
            assert refused.status_code == 429
            assert "--rest_api_max_concurrent_requests" in refused.json()["error"]
            assert not any(future.done() for future in admitted)
            gate.opened.set()
            assert [future.result().status_code for future in admitted] == [200, 200]


def test_rest_predict_over_the_timeout_is_504_and_keeps_its_slot_until_it_ends(model_base, cat_jpeg, monkeypatch):
    with gated_server(model_base, monkeypatch, rest_server, "run_predict",
                      rest_max_in_flight=1, rest_timeout_ms=200) as (gate, server):
        url = rest_predict_url(server)
        timed_out = requests.post(url, json=rest_body(cat_jpeg), timeout=WAIT)
        # http_server.cc maps DEADLINE_EXCEEDED to 504; the message is DirectSession's.
        assert timed_out.status_code == 504
        assert timed_out.json() == {"error": "Timed out waiting for notification"}
        # The work behind it still runs, so it still counts against the limit: never an unbounded queue.
        assert requests.post(url, json=rest_body(cat_jpeg), timeout=WAIT).status_code == 429
        gate.opened.set()
        deadline = time.monotonic() + WAIT
        while requests.post(url, json=rest_body(cat_jpeg), timeout=WAIT).status_code == 429:
            assert time.monotonic() < deadline, "the slot of the timed-out request was never given back"
            time.sleep(0.05)


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def test_stop_drains_grpc_and_rest_at_the_same_time(model_base, cat_jpeg, monkeypatch):
    from serving.registry import ModelRegistry, single_model_config
    from serving.server import LocalServer

    grpc_gate, rest_gate = Gate(handlers.predict), Gate(rest_server.run_predict)
    monkeypatch.setattr(handlers, "predict", grpc_gate)
    monkeypatch.setattr(rest_server, "run_predict", rest_gate)
    registry = ModelRegistry([single_model_config("pets", str(model_base / "pets"))], poll_seconds=0)
    server = LocalServer(registry, grpc_port=free_port(), rest_port=free_port(), grace_seconds=WAIT * 2).start()
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    stopper = threading.Thread(target=server.stop)
    try:
        grpc_call = stub.Predict.future(predict_request(cat_jpeg), timeout=WAIT * 2)
        with ThreadPoolExecutor(1) as client:
            rest_call = client.submit(requests.post, rest_predict_url(server),
                                      json=rest_body(cat_jpeg), timeout=WAIT * 2)
            grpc_gate.wait_for_entries(1)
            rest_gate.wait_for_entries(1)
            stopper.start()
            # REST stops accepting while the gRPC request is still draining (before: only after it).
            deadline = time.monotonic() + WAIT
            while not refuses_connections(server.rest_port):
                assert time.monotonic() < deadline, "REST kept accepting while gRPC drained"
                time.sleep(0.05)
            assert not grpc_call.done() and not rest_call.done()
            grpc_gate.opened.set()
            rest_gate.opened.set()
            assert grpc_call.result().outputs["probabilities"].tensor_shape.dim[0].size == 1
            assert rest_call.result().status_code == 200
        stopper.join(WAIT)
        assert not stopper.is_alive()
    finally:
        grpc_gate.opened.set()
        rest_gate.opened.set()
        if stopper.ident is None:  # failed before stop() began
            server.stop()


def test_a_failed_rest_bind_stops_grpc_and_the_registry(model_base):
    occupied = socket.socket()
    occupied.bind(("127.0.0.1", 0))
    occupied.listen()
    grpc_port = free_port()
    threads_before = set(threading.enumerate())
    try:
        with pytest.raises(OSError, match="cannot bind REST to 127.0.0.1:"):
            start_local_server(model_base, grpc_port_override=grpc_port,
                               rest_port_override=occupied.getsockname()[1])
    finally:
        occupied.close()
    assert refuses_connections(grpc_port), "gRPC was left serving after the REST bind failed"
    time.sleep(0.5)  # let stopped threads finish exiting
    left = [t.name for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert left == [], f"threads left running: {left}"


def test_model_server_with_its_rest_port_taken_exits_with_one_line(model_base):
    import subprocess
    import sys

    from tests.conftest import REPO

    occupied = socket.socket()
    occupied.bind(("127.0.0.1", 0))
    occupied.listen()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "serving", f"--port={free_port()}", f"--rest_api_port={occupied.getsockname()[1]}",
             "--model_name=pets", f"--model_base_path={model_base / 'pets'}"],
            cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        occupied.close()
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot bind REST" in errors[0] and "Address already in use" in errors[0]


def test_a_grpc_request_whose_deadline_passed_before_it_ran_is_not_run():
    from serving.grpc_server import _Failed, _run

    class ExpiredContext:
        def time_remaining(self):
            return 0.0

        def is_active(self):
            return True

    ran = []
    with pytest.raises(_Failed) as info:
        _run(ExpiredContext(), ran.append, "request")
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and ran == []


def test_admitted_rest_latency_under_load_is_printed(model_base, cat_jpeg):
    """Not a timing assertion: every request is answered (200 or 429, nothing else), and the p99
    of the admitted ones is printed for the record."""
    server = start_local_server(model_base, rest_threads=2, rest_max_in_flight=2)
    url = rest_predict_url(server)

    def one():
        started = time.perf_counter()
        status = requests.post(url, json=rest_body(cat_jpeg), timeout=WAIT).status_code
        return status, time.perf_counter() - started

    try:
        with ThreadPoolExecutor(8) as clients:
            results = list(clients.map(lambda _: one(), range(40)))
    finally:
        server.stop()
    statuses = {status for status, _ in results}
    assert statuses <= {200, 429} and 200 in statuses
    admitted = [seconds for status, seconds in results if status == 200]
    print(f"\nREST, 8 clients, limit 2: {len(admitted)}/40 admitted, p50 "
          f"{statistics.median(admitted) * 1000:.1f} ms, p99 {percentile(admitted, 0.99) * 1000:.1f} ms")

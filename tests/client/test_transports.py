"""What each transport puts on the wire and how it waits: full-jitter retry backoff, REST's
versionless predict URL and its one pooled Session, gRPC's round_robin for dns:/// targets."""
import json
import random
import shutil
import threading

import pytest
import requests
import requests.adapters

from client import CallOptions, ModelClient, ServerError
from client.retry import backoff_seconds, with_retries
from tests.conftest import free_port, start_local_server

ROW = {"probabilities": [0.9, 0.1], "classes": 0, "labels": "cat"}


# --- retries -----------------------------------------------------------------------------------

def failing(times: int, code: str = "UNAVAILABLE"):
    calls = []

    def attempt():
        calls.append(1)
        if len(calls) <= times:
            raise ServerError(code, "down")
        return "answer"

    return attempt, calls


def test_each_retry_waits_a_uniform_draw_below_the_doubling_capped_bound():
    attempt, calls = failing(5)
    bounds, slept = [], []

    def uniform(low, high):
        bounds.append((low, high))
        return high / 2

    options = CallOptions(model="m", retries=5, backoff_seconds=0.2, max_backoff_seconds=1.0)
    assert with_retries(attempt, options, sleep=slept.append, uniform=uniform) == "answer"
    assert bounds == [(0.0, 0.2), (0.0, 0.4), (0.0, 0.8), (0.0, 1.0), (0.0, 1.0)]
    assert slept == [0.1, 0.2, 0.4, 0.5, 0.5] and len(calls) == 6


def test_jittered_waits_stay_within_bounds_and_are_spread():
    rng = random.Random(7)
    waits = [backoff_seconds(3, base=0.5, cap=10.0, uniform=rng.uniform) for _ in range(500)]
    assert all(0.0 <= w <= 4.0 for w in waits)
    assert min(waits) < 0.5 and max(waits) > 3.5  # the whole range, not the bound itself
    assert backoff_seconds(10_000, base=0.5, cap=10.0, uniform=lambda low, high: high) == 10.0


def test_a_refusal_that_is_not_retryable_is_not_retried_and_retries_run_out():
    attempt, calls = failing(1, "INVALID_ARGUMENT")
    with pytest.raises(ServerError):
        with_retries(attempt, CallOptions(model="m", retries=3), sleep=lambda s: None)
    assert len(calls) == 1
    attempt, calls = failing(10)
    with pytest.raises(ServerError):
        with_retries(attempt, CallOptions(model="m", retries=2), sleep=lambda s: None)
    assert len(calls) == 3


# --- REST: the URL and the Session ---------------------------------------------------------------

@pytest.fixture
def fake_http(monkeypatch):
    """Every request the REST transport sends, answered with one prediction per instance."""
    sent = []
    lock = threading.Lock()

    def send(adapter, request, **kwargs):
        with lock:
            sent.append((adapter, request.method, request.url))
        response = requests.Response()
        response.status_code = 200
        instances = json.loads(request.body)["instances"] if request.body else []
        response._content = json.dumps({"predictions": [ROW] * len(instances)}).encode()
        return response

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    return sent


@pytest.mark.parametrize("asked,path,version", [
    ({}, "/v1/models/pets:predict", None),
    ({"version": 3}, "/v1/models/pets/versions/3:predict", 3),
    ({"label": "canary"}, "/v1/models/pets/labels/canary:predict", None),
])
def test_rest_predict_posts_once_to_the_url_of_what_was_asked(fake_http, asked, path, version):
    # No status call first to find the latest version: another replica could answer it mid-rollout.
    with ModelClient.rest("http://model.example:8501", "pets", retries=0, **asked) as client:
        results = client.predict_bytes([("a", b"x"), ("b", b"y")])
    assert [(method, url) for _, method, url in fake_http] == [("POST", "http://model.example:8501" + path)]
    assert [(r.label, r.version) for r in results] == [("cat", version), ("cat", version)]


def test_rest_client_uses_one_connection_pool_across_threads_and_closes_it(fake_http, monkeypatch):
    closed = []
    real_close = requests.adapters.HTTPAdapter.close
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "close", lambda self: closed.append(self) or real_close(self))
    client = ModelClient.rest("http://model.example:8501", "pets", batch_size=1, concurrency=4, retries=0)
    results = client.predict_bytes([(f"img{i}", b"x") for i in range(12)])
    assert len(results) == 12 and all(r.ok for r in results)
    adapters = {id(adapter) for adapter, _, _ in fake_http}
    assert len(adapters) == 1, "each thread had its own Session"
    assert closed == []
    client.close()
    assert {id(adapter) for adapter in closed} == adapters


# --- gRPC: dns:/// and round_robin -------------------------------------------------------------

@pytest.mark.parametrize("target,balanced", [
    ("dns:///pets-grpc.default.svc.cluster.local:8500", True),
    ("ipv4:10.0.0.1:8500,10.0.0.2:8500", True),
    ("localhost:8500", False),
])
def test_resolver_targets_get_round_robin_and_plain_ones_keep_grpcs_default(target, balanced):
    from client.transport_grpc import build_channel_options

    options = dict(build_channel_options(target, CallOptions(model="pets")))
    assert (options.get("grpc.lb_policy_name") == "round_robin") is balanced
    assert "grpc.max_send_message_length" not in options  # the byte budget decides what is sent


@pytest.fixture(scope="module")
def two_replicas(model_base, tmp_path_factory):
    """Two servers on one port, at 127.0.0.1 and 127.0.0.2, serving versions 1 and 2 of pets:
    the version in each answer tells which replica gave it."""
    second = tmp_path_factory.mktemp("replica") / "models"
    shutil.copytree(model_base / "pets" / "1", second / "pets" / "2")
    port = free_port()
    servers = []
    try:
        for host, base in (("127.0.0.1", model_base), ("127.0.0.2", second)):
            servers.append(start_local_server(base, host=host, grpc_port_override=port))
    except OSError as err:
        for server in servers:
            server.stop()
        pytest.skip(f"cannot bind a second loopback address (127.0.0.2): {err}")
    yield port
    for server in servers:
        server.stop()


def test_a_resolver_target_spreads_requests_over_every_replica(two_replicas, cat_jpeg):
    # round_robin picks among the replicas connected so far: ask until both answered (or 64 times).
    versions = set()
    with ModelClient.grpc(f"ipv4:127.0.0.1:{two_replicas},127.0.0.2:{two_replicas}", "pets",
                          wait_for_ready=True, timeout=30) as client:
        for _ in range(64):
            versions.add(client.predict_bytes([("cat", cat_jpeg)])[0].version)
            if len(versions) == 2:
                break
    assert versions == {1, 2}


def test_a_dns_target_reaches_the_server(two_replicas, cat_jpeg):
    with ModelClient.grpc(f"dns:///127.0.0.1:{two_replicas}", "pets", wait_for_ready=True, timeout=30) as client:
        result = client.predict_bytes([("cat", cat_jpeg)])[0]
    assert result.ok and result.version == 1

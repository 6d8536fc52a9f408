"""Requests sized by bytes as well as by count: filled under a budget, halved when the server
refuses one as too large (gRPC RESOURCE_EXHAUSTED, HTTP 413), an image too large alone failing
by itself; results always in input order."""
import io

import numpy as np
import pytest
from PIL import Image

from client import ModelClient, ServerError
from client.batching import plan_batches
from tests.client.test_evaluate import FakeTransport
from tests.conftest import start_local_server

SERVER_LIMIT = 48_000  # the test server's --max_request_bytes: a few noise photos per request


def noise_jpeg(side: int, seed: int) -> bytes:
    """A photo that JPEG cannot shrink much: ~11 KB at 96 px, ~78 KB at 256 px (quality 95)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=95)
    return out.getvalue()


@pytest.fixture(scope="module")
def small_limit_server(model_base):
    server = start_local_server(model_base, max_request_bytes=SERVER_LIMIT)
    yield server
    server.stop()


def make_client(server, transport: str, **options) -> ModelClient:
    if transport == "grpc":
        return ModelClient.grpc(f"127.0.0.1:{server.grpc_port}", "pets", retries=0, **options)
    return ModelClient.rest(f"http://127.0.0.1:{server.rest_port}", "pets", retries=0, **options)


def record_calls(client: ModelClient) -> list[tuple[int, str]]:
    """(images sent, "ok" or the refusal's code) for each request the transport makes."""
    calls, real_predict = [], client.transport.predict

    def predict(images):
        try:
            answer = real_predict(images)
        except ServerError as err:
            calls.append((len(images), err.code))
            raise
        calls.append((len(images), "ok"))
        return answer

    client.transport.predict = predict
    return calls


@pytest.fixture(scope="module")
def sixteen_large_photos():
    return [(f"photo{i:02d}", noise_jpeg(96, i)) for i in range(16)]


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_sixteen_large_photos_go_in_several_requests_each_under_the_budget(small_limit_server, sixteen_large_photos,
                                                                         transport):
    # The budget equals the server's limit: every request the client fills must pass it, with the
    # transport's estimate of the gRPC message / REST body (base64 and JSON included).
    with make_client(small_limit_server, transport, batch_size=16, max_request_bytes=SERVER_LIMIT) as client:
        calls = record_calls(client)
        results = client.predict_bytes(sixteen_large_photos)
    assert [r.source for r in results] == [source for source, _ in sixteen_large_photos]
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert len(calls) > 3 and all(outcome == "ok" for _, outcome in calls), calls
    assert sum(n for n, _ in calls) == 16


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_a_batch_the_server_finds_too_large_is_halved_until_it_passes(small_limit_server, sixteen_large_photos,
                                                                      transport):
    # The client's budget (its 48 MiB default) is far above this server's limit: the server refuses
    # (gRPC RESOURCE_EXHAUSTED, HTTP 413) and the halves are resent.
    with make_client(small_limit_server, transport, batch_size=16) as client:
        calls = record_calls(client)
        results = client.predict_bytes(sixteen_large_photos)
    assert [r.source for r in results] == [source for source, _ in sixteen_large_photos]
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert calls[:2] == [(16, "RESOURCE_EXHAUSTED"), (8, "RESOURCE_EXHAUSTED")]  # REST: 413, read as it
    assert sum(n for n, outcome in calls if outcome == "ok") == 16


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_one_photo_the_server_refuses_as_too_large_fails_alone(small_limit_server, sixteen_large_photos, transport):
    images = sixteen_large_photos[:5] + [("huge", noise_jpeg(256, 99))] + sixteen_large_photos[5:8]
    with make_client(small_limit_server, transport, batch_size=16) as client:
        results = client.predict_bytes(images)
    assert [r.source for r in results] == [source for source, _ in images]
    assert [r.ok for r in results] == [True] * 5 + [False] + [True] * 3
    assert results[5].error.startswith("RESOURCE_EXHAUSTED: ")
    if transport == "rest":
        assert str(SERVER_LIMIT) in results[5].error  # the server's 413 message names its limit


def test_an_image_over_the_clients_budget_fails_alone_unsent():
    transport = FakeTransport()
    sent = []
    real_predict = transport.predict
    transport.predict = lambda images: sent.append(list(images)) or real_predict(images)
    images = [("a", b"0:0.9"), ("big", b"1:0.8" + b"0" * 100), ("b", b"1:0.7"), ("c", b"0:0.6")]
    with ModelClient(transport, batch_size=16, max_request_bytes=50) as client:
        done = []
        results = client.predict_bytes(images, on_done=done.extend)
    assert [r.source for r in results] == ["a", "big", "b", "c"]
    assert [r.ok for r in results] == [True, False, True, True]
    assert results[1].error == ("RESOURCE_EXHAUSTED: not sent: the image is 105 bytes, 105 bytes as a request of "
                                "its own, over the client's per-request limit of 50 bytes (--max-request-bytes)")
    assert sent == [[b"0:0.9", b"1:0.7", b"0:0.6"]]
    assert sorted(p.source for p in done) == ["a", "b", "big", "c"]  # the progress bar counts it too


def test_requests_are_cut_by_count_or_by_bytes_whichever_comes_first():
    request_bytes = lambda sizes: 10 + sum(sizes)
    plan = plan_batches([30, 30, 30, 5, 5, 5, 5, 200, 40], max_images=3, max_bytes=80, request_bytes=request_bytes)
    assert plan.batches == [[0, 1], [2, 3, 4], [5, 6, 8]]
    assert plan.oversized == [7]


def test_only_refusals_about_size_split_a_batch():
    # REST 429 is load (TF Serving's RESOURCE_EXHAUSTED over HTTP, a proxy's rate limit): halves
    # would only double the requests.
    error = ServerError("RESOURCE_EXHAUSTED", "Too Many Requests", 429)
    assert not error.is_too_large
    assert ServerError("RESOURCE_EXHAUSTED", "too large", 413).is_too_large
    assert ServerError("RESOURCE_EXHAUSTED", "Received message larger than max").is_too_large


@pytest.mark.parametrize("given,expected", [("32M", 32 << 20), ("512k", 512 << 10), ("1.5G", 3 << 29),
                                            ("50000", 50000)])
def test_max_request_bytes_takes_plain_or_suffixed_sizes(given, expected):
    from client.cli_args import build_parser

    args = build_parser("classify").parse_args(["--grpc", "h:1", "--model", "m", "--max-request-bytes", given, "x"])
    assert args.max_request_bytes == expected


@pytest.mark.parametrize("given", ["lots", "0", "-5M", "infK"])
def test_max_request_bytes_refuses_what_is_not_a_size(given, capsys):
    from client.cli_args import build_parser

    with pytest.raises(SystemExit):
        build_parser("classify").parse_args(["--grpc", "h:1", "--model", "m", "--max-request-bytes", given, "x"])
    assert "--max-request-bytes" in capsys.readouterr().err


@pytest.mark.parametrize("given", ["localhost:8501", "ftp://localhost:8501"])
def test_rest_refuses_an_address_without_an_http_scheme_naming_the_url_to_give(given, capsys):
    from client.cli_args import build_parser

    with pytest.raises(SystemExit):
        build_parser("classify").parse_args(["--rest", given, "--model", "m", "x"])
    assert "not an http(s) URL" in capsys.readouterr().err
    assert build_parser("classify").parse_args(["--rest", "https://h:1/", "--model", "m", "x"]).rest == "https://h:1/"

"""Both transports against the local server: results, batching, bad images, retries,
deadlines, TLS, and the command line."""
import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from client import ModelClient, ServerError
from client.__main__ import main as predict_main
from tests.conftest import encode, free_port, start_local_server, synthetic_photo


@pytest.fixture(scope="module")
def server(model_base):
    server = start_local_server(model_base)
    yield server
    server.stop()


@pytest.fixture(params=["grpc", "rest"])
def client(request, server):
    if request.param == "grpc":
        c = ModelClient.grpc(f"127.0.0.1:{server.grpc_port}", "pets", batch_size=4)
    else:
        c = ModelClient.rest(f"http://127.0.0.1:{server.rest_port}", "pets", batch_size=4)
    yield c
    c.close()


@pytest.fixture
def photos(tmp_path):
    import random

    rng = random.Random(3)
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    paths = []
    for i in range(6):
        path = folder / ("nested" if i % 2 else "") / f"img{i}.jpg"
        path.write_bytes(encode(synthetic_photo(i % 2, rng)))
        paths.append(str(path))
    return folder, sorted(paths)


def test_predict_files_returns_a_result_per_image_with_the_answering_version(client, photos):
    # TF Serving's REST predict does not say which version answered: unreported unless one was asked.
    _, paths = photos
    results = client.predict_files(paths)
    assert [r.source for r in results] == paths
    for r in results:
        assert r.ok and r.label in ("cat", "dog") and r.version == (1 if client.transport.name == "grpc" else None)
        assert r.label == ["cat", "dog"][r.class_index] and abs(sum(r.probabilities) - 1) < 1e-5


def test_one_corrupt_image_in_a_batch_loses_nothing_else(client, photos, tmp_path):
    _, paths = photos
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    mixed = paths[:2] + [str(broken)] + paths[2:5]
    results = client.predict_files(mixed)
    assert [r.source for r in results] == mixed
    assert [r.ok for r in results] == [True, True, False, True, True, True]
    assert results[2].error.startswith("INVALID_ARGUMENT") and "JPEG" in results[2].error
    alone = {r.source: r.probabilities for r in client.predict_files(paths[:5])}
    for r in results:
        if r.ok:
            assert r.probabilities == pytest.approx(alone[r.source], abs=1e-6)


def test_status_and_metadata(client):
    assert [(s.version, s.state, s.error_code) for s in client.status()] == [(1, "AVAILABLE", "OK")]
    signature = client.metadata()["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert list(signature["inputs"]) == ["image_bytes"]


def test_server_errors_carry_the_status_and_message(server):
    with ModelClient.grpc(f"127.0.0.1:{server.grpc_port}", "nope", retries=0) as c:
        with pytest.raises(ServerError) as info:
            c.status()
    assert info.value.code == "NOT_FOUND" and "nope" in info.value.message
    with ModelClient.rest(f"http://127.0.0.1:{server.rest_port}", "pets", version=9, retries=0) as c:
        with pytest.raises(ServerError) as info:
            c.predict_bytes([("x", b"y")])
    assert (info.value.code, info.value.http_status) == ("NOT_FOUND", 404)


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_retries_until_the_server_is_up(model_base, cat_jpeg, transport):
    grpc_port, rest_port = free_port(), free_port()
    options = dict(retries=12, backoff_seconds=0.25, timeout=10)  # loading takes seconds on a busy machine
    if transport == "grpc":
        client = ModelClient.grpc(f"127.0.0.1:{grpc_port}", "pets", **options)
    else:
        client = ModelClient.rest(f"http://127.0.0.1:{rest_port}", "pets", **options)
    started = {}

    def start_later():
        time.sleep(1.0)
        started["server"] = start_local_server(model_base, grpc_port_override=grpc_port, rest_port_override=rest_port)

    thread = threading.Thread(target=start_later)
    thread.start()
    try:
        results = client.predict_bytes([("cat", cat_jpeg)])
    finally:
        thread.join()
        client.close()
        started["server"].stop()
    assert results[0].ok


def test_deadline_exceeded_is_reported(server, cat_jpeg):
    with ModelClient.grpc(f"127.0.0.1:{server.grpc_port}", "pets", timeout=1e-4, retries=0) as c:
        with pytest.raises(ServerError) as info:
            c.predict_bytes([("cat", cat_jpeg)] * 8)
    assert info.value.code == "DEADLINE_EXCEEDED"
    with ModelClient.rest(f"http://127.0.0.1:{server.rest_port}", "pets", version=1, timeout=1e-4, retries=0) as c:
        with pytest.raises(ServerError) as info:
            c.predict_bytes([("cat", cat_jpeg)] * 8)
    assert info.value.code == "DEADLINE_EXCEEDED"


@pytest.fixture
def certificates(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    key, cert = tmp_path / "server.key", tmp_path / "server.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return key, cert


def test_grpc_over_tls_with_a_certificate_made_in_the_test(model_base, certificates, cat_jpeg, tmp_path):
    from serving.server import read_ssl_config

    key, cert = certificates
    escaped = lambda path: path.read_text().replace("\n", "\\n")  # as in TF Serving's ssl_config_file
    config = tmp_path / "ssl.config"
    config.write_text(f'server_key: "{escaped(key)}"\nserver_cert: "{escaped(cert)}"\n')
    server = start_local_server(model_base, tls=read_ssl_config(str(config)))
    try:
        with ModelClient.grpc(f"127.0.0.1:{server.grpc_port}", "pets", tls_ca=str(cert),
                              tls_server_name="localhost") as c:
            assert c.predict_bytes([("cat", cat_jpeg)])[0].ok
        with ModelClient.grpc(f"127.0.0.1:{server.grpc_port}", "pets", retries=0, timeout=5) as plain:
            with pytest.raises(ServerError) as info:
                plain.status()
            assert info.value.code == "UNAVAILABLE"
    finally:
        server.stop()


def test_rest_verifies_with_tls_ca_even_when_a_ca_bundle_variable_is_set(tmp_path, monkeypatch):
    # requests lets REQUESTS_CA_BUNDLE replace a Session's CA file (psf/requests#3829), which
    # would silently trust other CAs than the one given: the CA must reach the connection.
    import requests

    ca = tmp_path / "ca.pem"
    ca.write_text("not read: the connection is faked")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "system-bundle.pem"))
    used = []

    def fake_send(adapter, request, **kwargs):
        used.append(kwargs["verify"])
        response = requests.Response()
        response.status_code, response._content = 200, b'{"model_version_status": []}'
        return response

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", fake_send)
    with ModelClient.rest("https://model.example:8501", "pets", tls_ca=str(ca), retries=0) as c:
        c.status()
    assert used == [str(ca)]


# --- the command line ----------------------------------------------------------------------

def test_cli_classifies_a_200_image_directory_as_jsonl(server, tmp_path, capsys):
    import random

    rng = random.Random(5)
    folder = tmp_path / "many"
    for i in range(200):
        sub = folder / f"part{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:03d}.jpg").write_bytes(encode(synthetic_photo(i % 2, rng, size=(36, 36))))
    given = str(folder) + "/"
    code = predict_main(["--grpc", f"127.0.0.1:{server.grpc_port}", "--model", "pets", "--jsonl",
                         "--concurrency", "4", "--batch-size", "8", given])
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 200
    assert {r["source"] for r in rows} == {os.path.join(given, f"part{i % 3}", f"{i:03d}.jpg") for i in range(200)}
    assert all(set(r) >= {"source", "label", "class_index", "probabilities", "error"} for r in rows)
    assert "200 of 200 images classified" in err


def test_cli_table_reports_a_corrupt_file_and_exits_non_zero(server, photos, tmp_path, capsys):
    _, paths = photos
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code = predict_main(["--rest", f"http://127.0.0.1:{server.rest_port}", "--model", "pets", paths[0],
                         str(broken)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "ERROR" in out and "broken.png" in out and "INVALID_ARGUMENT" in out
    assert "1 of 2 images classified" in err and "1 failed" in err


def test_cli_status_and_metadata(server, capsys):
    assert predict_main(["status", "--grpc", f"127.0.0.1:{server.grpc_port}", "--model", "pets"]) == 0
    assert "pets  version 1  AVAILABLE" in capsys.readouterr().out
    assert predict_main(["metadata", "--rest", f"http://127.0.0.1:{server.rest_port}", "--model", "pets"]) == 0
    assert '"image_bytes"' in capsys.readouterr().out
    assert predict_main(["status", "--grpc", f"127.0.0.1:{server.grpc_port}", "--model", "nope",
                         "--retries", "0"]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--tls-ca", "--tls-cert"])
def test_a_cli_failure_that_is_not_the_gate_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, flag):
    # Exit 1 means failed images or a failed accuracy gate (the evaluation Job fails at once on
    # it), so a missing --tls-* file, like any unforeseen error, must not exit 1.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # requests lets these replace a Session's CA file
        monkeypatch.delenv(name, raising=False)
    missing = tmp_path / "missing.pem"
    assert predict_main(["status", "--rest", "https://127.0.0.1:1", "--model", "pets", "--retries", "0",
                         flag, str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(missing) in err
    assert "Traceback" not in err and "OSError" not in err


# --- which refusals split a batch ----------------------------------------------------------------

def test_a_request_level_refusal_fails_once_without_splitting(client, cat_jpeg):
    client.transport.options.signature = "nope"
    calls = []
    real_predict = client.transport.predict
    client.transport.predict = lambda images: calls.append(len(images)) or real_predict(images)
    with pytest.raises(ServerError) as info:
        client.predict_bytes([("a", cat_jpeg)] * 4)
    assert "nope" in info.value.message and calls == [4]


@pytest.mark.parametrize("status,message,code,image", [
    (400, "assertion failed: [image is empty (0 bytes)]", "INVALID_ARGUMENT", True),
    (400, "Invalid JPEG data or crop window, data size 22", "INVALID_ARGUMENT", True),
    (400, "Task size 40 is larger than maximum input batch size 32", "INVALID_ARGUMENT", False),
    (400, 'Serving signature name: "x" not found in signature def', "INVALID_ARGUMENT", False),
    (400, 'Serving signature key "x" not found.', "FAILED_PRECONDITION", False),
    (400, "Tensors with name 'x' from different tasks have different shapes and padding is turned off.",
     "FAILED_PRECONDITION", False),
])
def test_rest_errors_are_read_from_the_message(status, message, code, image):
    from model_api.status import code_for_http_status

    error = ServerError(code_for_http_status(status, message), message, status)
    assert (error.code, error.is_image_error) == (code, image)


def test_the_default_batch_size_fits_the_shipped_batching_parameters():
    from client.batching import DEFAULT_BATCH_SIZE
    from serving.config_protos import BatchingParameters, parse_text_file
    from tests.conftest import REPO

    params = parse_text_file(str(REPO / "serving" / "config" / "batching_parameters.txt"), BatchingParameters)
    assert DEFAULT_BATCH_SIZE <= params.max_batch_size.value

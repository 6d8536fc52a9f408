"""Behaviours the local server shares with tensorflow_model_server, each checked over gRPC and REST
where the API has it. Each test starts its own local server with the configuration it needs
(TF Serving would need its own container for each, so these run against the local server only).

Sources: core/availability_preserving_policy.cc and aspired_versions_manager.cc (broken newest
version), model_servers/server_core.cc (labels, start-up), model_servers/main.cc and server.cc
(flags, --port, SSLConfig), batching_util/shared_batch_scheduler.h (oversized batches).
"""
import os
import shutil
import subprocess
import sys
import time

import grpc
import pytest

from client import ModelClient, ServerError
from serving.batching import BatchingOptions
from serving.config_protos import BatchingParameters, parse_text_file
from serving.registry import StartupError, single_model_config
from tests.conftest import REPO, start_local_server
from tests.contract.api import ApiError, GrpcApi, RestApi
from tests.contract.test_api import expect_error

CONFIG_DIR = REPO / "serving" / "config"
FAST_RETRIES = {"max_num_load_retries": 1, "load_retry_interval_seconds": 0.05}


def apis(server):
    return [GrpcApi(f"127.0.0.1:{server.grpc_port}"), RestApi(f"http://127.0.0.1:{server.rest_port}")]


def copy_version(source_base, base, version, source_version=1, name="pets"):
    staging = base / name / f".copy-{version}"  # TF Serving ignores non-integer names
    shutil.copytree(source_base / name / str(source_version), staging)
    os.rename(staging, base / name / str(version))


def broken_version(base, version, name="pets"):
    staging = base / name / f".broken-{version}"
    staging.mkdir(parents=True)
    (staging / "saved_model.pb").write_bytes(b"not a SavedModel")
    os.rename(staging, base / name / str(version))


def wait_for(condition, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


# --- a newest version that fails to load ------------------------------------------------------

def test_a_broken_newest_version_at_start_fails_the_start_instead_of_serving_the_previous(model_base, tmp_path):
    base = tmp_path / "models"
    copy_version(model_base, base, 1)
    broken_version(base, 2)
    with pytest.raises(StartupError) as info:
        start_local_server(base, registry_options=FAST_RETRIES)
    message = str(info.value)
    assert message.startswith("1 model(s) did not become available: {{{name: pets version: 2} due to error: "
                              "DATA_LOSS: ") and message.endswith("}, }"), message


def test_model_server_refuses_to_start_on_a_broken_newest_version_in_one_line(model_base, tmp_path):
    base = tmp_path / "models"
    copy_version(model_base, base, 1)
    broken_version(base, 2)
    result = subprocess.run([sys.executable, "-m", "serving", "--port=18500", "--rest_api_port=0", "--model_name=pets",
                             f"--model_base_path={base / 'pets'}", "--max_num_load_retries=0"],
                            cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1
    failure = [line for line in result.stderr.splitlines() if line.startswith("Failed to start server. Error: ")]
    assert len(failure) == 1 and "version: 2" in failure[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_a_broken_newest_version_during_a_swap_leaves_the_previous_serving_and_reports_its_code(
        model_base, tmp_path, cat_jpeg, monkeypatch):
    from serving.servable import Servable

    base = tmp_path / "models"
    copy_version(model_base, base, 1)
    server = start_local_server(base, registry_options=FAST_RETRIES)
    grpc_api, rest_api = apis(server)
    loads, real_load = [], Servable.load
    monkeypatch.setattr(Servable, "load", staticmethod(
        lambda name, version, path, scheduler=None: loads.append(version) or real_load(name, version, path, scheduler)))
    try:
        broken_version(base, 2)
        wait_for(lambda: (2, "END", "DATA_LOSS") in grpc_api.status())
        time.sleep(1.0)  # several polls (0.2 s apart)
        assert loads == [2] * (FAST_RETRIES["max_num_load_retries"] + 1), \
            "tried once and retried max_num_load_retries times, then not loaded again while it is aspired"
        for api in (grpc_api, rest_api):
            # Newest first, as TF Serving lists them (servable_state_monitor.h: std::greater<Version>).
            assert api.status() == [(2, "END", "DATA_LOSS"), (1, "AVAILABLE", 0)], api.name
            _, outputs = api.predict([cat_jpeg])
            assert outputs["probabilities"].shape == (1, 2)
        assert grpc_api.predict([cat_jpeg])[0] == 1
        expect_error(lambda: rest_api.predict([cat_jpeg], version=2), "NOT_FOUND", "Specific(pets, 2)")
        copy_version(model_base, base, 3)  # a good newer version: served, and only then is 1 unloaded
        wait_for(lambda: (3, "AVAILABLE", 0) in grpc_api.status())
        wait_for(lambda: (1, "END", 0) in rest_api.status())
        assert grpc_api.predict([cat_jpeg])[0] == 3
    finally:
        server.stop()


# --- version labels ------------------------------------------------------------------------------

def labelled_config(base):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(f'name: "pets" base_path: "{base / "pets"}" model_platform: "tensorflow" '
                             'model_version_policy { specific { versions: 1 versions: 2 } } '
                             'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 }',
                             model_server_config_pb2.ModelConfig())


def test_a_label_for_a_version_that_is_not_loaded_fails_the_start(model_base):
    with pytest.raises(StartupError, match="Request to assign label to version 2 of model pets, which is not "
                                           "currently available for inference"):
        start_local_server(model_base, configs=[labelled_config(model_base)])


def test_allow_version_labels_for_unavailable_models_accepts_it_and_requests_find_no_servable(model_base, cat_jpeg):
    server = start_local_server(model_base, configs=[labelled_config(model_base)],
                                registry_options={"allow_version_labels_for_unavailable_models": True})
    try:
        for api in apis(server):
            _, outputs = api.predict([cat_jpeg], label="stable")
            assert outputs["probabilities"].shape == (1, 2)
            expect_error(lambda: api.predict([cat_jpeg], label="canary"), "NOT_FOUND", "Specific(pets, 2)")
            expect_error(lambda: api.predict([cat_jpeg], label="beta"), "INVALID_ARGUMENT",
                         "Unrecognized servable version label: beta")
            # GetModelStatus ignores a label (get_model_status_impl.cc checks only has_version()), so
            # GET /v1/models/pets/labels/beta answers 200 with every version, as TF Serving does.
            for label in ("stable", "canary", "beta"):
                assert api.status(label=label) == [(1, "AVAILABLE", 0)], (api.name, label)
    finally:
        server.stop()


# --- flags --------------------------------------------------------------------------------------

@pytest.mark.parametrize("argument,value", [("--enable_model_warmup=false", False), ("--enable_model_warmup=0", False),
                                            ("--enable_model_warmup=False", False), ("--enable_batching=FALSE", False),
                                            ("--enable_model_warmup=true", True), ("--enable_model_warmup=1", True),
                                            ("--enable_batching=TRUE", True), ("--enable_batching=True", True),
                                            ("--enable_model_warmup", True), ("--enable_batching", True)])
def test_boolean_flags_read_true_false_in_any_case_1_and_0_like_tf_serving(argument, value):
    # tsl's ParseBoolFlag: absl::EqualsIgnoreCase(arg, "true") || arg == "1", and the same for false.
    from serving.__main__ import build_parser

    args = build_parser().parse_args([argument, "--model_base_path=/m"])
    assert getattr(args, argument[2:].split("=")[0]) is value


@pytest.mark.parametrize("argument", ["--enable_model_warmup=no", "--enable_batching=yes", "--enable_batching=2",
                                      "--enable_model_warmup=t"])
def test_any_other_boolean_value_is_a_usage_error(argument, capsys):
    from serving.__main__ import build_parser

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([argument])
    assert info.value.code == 2 and "Couldn't interpret value" in capsys.readouterr().err


def test_port_0_is_refused_as_tf_serving_refuses_it(capsys, model_base):
    from serving.__main__ import main
    from serving.registry import ModelRegistry
    from serving.server import LocalServer

    assert main(["--port=0", f"--model_base_path={model_base / 'pets'}"]) == 2
    assert "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set." in \
        capsys.readouterr().err
    with pytest.raises(ValueError, match="grpc_port"):
        LocalServer(ModelRegistry([single_model_config("pets", str(model_base / "pets"))]), grpc_port=0)


def test_a_batching_parameters_file_without_enable_batching_is_refused(capsys, model_base):
    from serving.__main__ import main

    assert main([f"--model_base_path={model_base / 'pets'}",
                 f"--batching_parameters_file={CONFIG_DIR / 'batching_parameters.txt'}"]) == 2
    assert "batching_parameters_file is set without setting server_options.enable_batching to true" in \
        capsys.readouterr().err


# --- --ssl_config_file -----------------------------------------------------------------------------

def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost and a client certificate, both signed by the CA."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    for who, names in (("server", "DNS:localhost,IP:127.0.0.1"), ("client", "DNS:client")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}", "-keyout", str(d / f"{who}.key"),
                "-out", str(d / f"{who}.csr"))
        (d / f"{who}.ext").write_text(f"subjectAltName={names}\n")
        openssl("x509", "-req", "-in", str(d / f"{who}.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
                "-CAcreateserial", "-days", "1", "-extfile", str(d / f"{who}.ext"), "-out", str(d / f"{who}.crt"))
    return d


def text_literal(path, quote='"'):
    return quote + path.read_text().replace("\n", "\\n") + quote


def test_ssl_config_is_protobuf_text_with_comments_quotes_and_concatenation(pki, model_base, cat_jpeg, tmp_path):
    from serving.server import read_ssl_config

    cert = pki.joinpath("server.crt").read_text().replace("\n", "\\n")
    config = tmp_path / "ssl.config"
    config.write_text(
        "# TF Serving SSLConfig\n"
        f"server_key: {text_literal(pki / 'server.key', quote=chr(39))}  # single quotes\n"
        f'server_cert: "{cert[:100]}"\n  "{cert[100:]}"\n'  # two literals, concatenated
        f"custom_ca: {text_literal(pki / 'ca.crt')}\n"
        "client_verify: true\n"
        "# client_verify: false\n")
    server = start_local_server(model_base, tls=read_ssl_config(str(config)))
    target = f"127.0.0.1:{server.grpc_port}"
    ca = pki.joinpath("ca.crt").read_bytes()
    try:
        with_cert = GrpcApi(target, grpc.ssl_channel_credentials(ca, pki.joinpath("client.key").read_bytes(),
                                                                 pki.joinpath("client.crt").read_bytes()))
        assert with_cert.predict([cat_jpeg])[0] == 1
        without_cert = GrpcApi(target, grpc.ssl_channel_credentials(ca))
        with pytest.raises(ApiError) as info:
            without_cert.status()
        assert info.value.code == "UNAVAILABLE", "client_verify: true requires a client certificate"
    finally:
        server.stop()


def test_an_ssl_config_with_an_unknown_field_is_refused_in_one_line(tmp_path):
    from serving.server import read_ssl_config

    config = tmp_path / "ssl.config"
    config.write_text('server_key: "k"\nserver_cert: "c"\nclient_verfy: true\n')
    with pytest.raises(ValueError) as info:
        read_ssl_config(str(config))
    assert 'has no field named "client_verfy"' in str(info.value) and "\n" not in str(info.value)


# --- server-side batching -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def batching_server(model_base):
    options = BatchingOptions.from_proto(parse_text_file(str(CONFIG_DIR / "batching_parameters.txt"),
                                                         BatchingParameters))
    server = start_local_server(model_base, registry_options={"batching": options})
    yield server
    server.stop()


def test_a_batch_over_max_batch_size_is_refused_like_tf_serving(batching_server, cat_jpeg):
    for api in apis(batching_server):
        expect_error(lambda: api.predict([cat_jpeg] * 33), "INVALID_ARGUMENT",
                     "Task size 33 is larger than maximum input batch size 32")
        _, outputs = api.predict([cat_jpeg] * 32)
        assert outputs["probabilities"].shape == (32, 2)


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_the_client_fails_once_on_an_oversized_batch_and_still_splits_for_a_bad_image(batching_server, cat_jpeg,
                                                                                      transport):
    address = (f"127.0.0.1:{batching_server.grpc_port}" if transport == "grpc"
               else f"http://127.0.0.1:{batching_server.rest_port}")
    make = ModelClient.grpc if transport == "grpc" else ModelClient.rest
    with make(address, "pets", batch_size=40, retries=0) as client:
        calls = []
        real_predict = client.transport.predict
        client.transport.predict = lambda images: calls.append(len(images)) or real_predict(images)
        with pytest.raises(ServerError) as info:
            client.predict_bytes([(f"img{i}", cat_jpeg) for i in range(40)])
        assert "Task size 40 is larger than maximum input batch size 32" in info.value.message
        assert calls == [40], "a request-level refusal is not split"
    with make(address, "pets") as client:
        images = [(f"img{i}", cat_jpeg) for i in range(8)]
        images[5] = ("bad", b"not an image")
        results = client.predict_bytes(images)
    assert [r.ok for r in results] == [True] * 5 + [False] + [True] * 2
    assert "not a JPEG, PNG, GIF or BMP" in results[5].error

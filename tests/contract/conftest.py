"""Each contract test runs against every (server, transport) pair: the local server always,
TF Serving in Docker when an engine is reachable (tests/docker/docker-compose.yml)."""
import os
import subprocess

import pytest

from tests.conftest import docker_engine_reason, start_local_server
from tests.contract.api import GrpcApi, RestApi
from tests.deploy.pins import TF_SERVING_VERSION

TF_SERVING_IMAGE = f"tensorflow/serving:{TF_SERVING_VERSION}"  # Dockerfile.serve's base; never pulled by a test run


def tf_serving_reason() -> str | None:
    """None when TF Serving can run here: an engine, the compose plugin, and the image already
    present (it cannot be pulled during tests); otherwise why the TF Serving variants skip."""
    reason = docker_engine_reason()
    if reason:
        return f"needs a Docker engine: {reason}"
    for command, missing in ((["docker", "compose", "version"], "no `docker compose` plugin"),
                             (["docker", "image", "inspect", TF_SERVING_IMAGE], f"no local {TF_SERVING_IMAGE} image")):
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"{missing} ({err})"
        if result.returncode != 0:
            first = (result.stderr.strip() or result.stdout.strip() or "no answer").splitlines()[0]
            return f"{missing} ({first})"
    return None


@pytest.fixture(scope="module")
def local_endpoints(model_base):
    server = start_local_server(model_base)
    yield {"grpc": f"127.0.0.1:{server.grpc_port}", "rest": f"http://127.0.0.1:{server.rest_port}"}
    server.stop()


@pytest.fixture(scope="session")
def tf_serving_endpoints(request, model_base):
    reason = tf_serving_reason()
    if reason:
        pytest.skip(f"TF Serving variant: {reason}")
    os.environ["CONTRACT_MODEL_BASE"] = str(model_base)
    services = request.getfixturevalue("docker_services")
    grpc_port = services.port_for("tf-serving", 8500)
    rest_port = services.port_for("tf-serving", 8501)
    rest = f"http://{request.getfixturevalue('docker_ip')}:{rest_port}"

    def ready():
        import requests
        try:
            return requests.get(f"{rest}/v1/models/pets", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    services.wait_until_responsive(check=ready, timeout=120, pause=1)
    return {"grpc": f"{request.getfixturevalue('docker_ip')}:{grpc_port}", "rest": rest}


@pytest.fixture(params=[("local", "grpc"), ("local", "rest"), ("tf_serving", "grpc"), ("tf_serving", "rest")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def api(request):
    server, transport = request.param
    endpoints = request.getfixturevalue("local_endpoints" if server == "local" else "tf_serving_endpoints")
    return GrpcApi(endpoints["grpc"]) if transport == "grpc" else RestApi(endpoints["rest"])


@pytest.fixture(params=["local", "tf_serving"])
def rest_api(request):
    """REST only: for what only the JSON API has (its documents, its parsing)."""
    endpoints = request.getfixturevalue("local_endpoints" if request.param == "local" else "tf_serving_endpoints")
    return RestApi(endpoints["rest"])

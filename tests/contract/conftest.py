"""Each contract test runs against every (server, transport) pair: the local server always,
TF Serving in Docker when an engine is reachable (tests/docker/docker-compose.yml)."""
import os

import pytest

from tests.conftest import start_local_server
from tests.contract.api import GrpcApi, RestApi


@pytest.fixture(scope="module")
def local_endpoints(model_base):
    server = start_local_server(model_base)
    yield {"grpc": f"127.0.0.1:{server.grpc_port}", "rest": f"http://127.0.0.1:{server.rest_port}"}
    server.stop()


@pytest.fixture(scope="session")
def tf_serving_endpoints(request, model_base):
    request.getfixturevalue("docker_required")
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

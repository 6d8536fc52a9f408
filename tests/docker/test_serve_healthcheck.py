"""Dockerfile.serve's HEALTHCHECK, run as Docker runs it (its exec-form argv, `docker exec`ed into
the running container) in a container whose /bin/sh is dash, as in tensorflow/serving's Ubuntu
image, against the project's local server.

tensorflow/serving cannot be pulled here, so the container is Debian bookworm from
../shared/tools/local-docker (the base of its tensorflow/tensorflow stand-in: dash as /bin/sh,
bash installed, as on Ubuntu); `--network host` reaches the server on the loopback port the
healthcheck asks. Skips, saying why, without an engine or that image.
"""
from __future__ import annotations

import uuid

import pytest

from tests.deploy.dockerfile import healthcheck_argv, healthcheck_port, local_server_on_port, port_is_free
from tests.docker.conftest import docker, missing_base_reason

pytestmark = [pytest.mark.docker]

DEBIAN_STAND_IN = "local/bookworm-python:latest"  # ../shared/tools/local-docker base-images imports it


@pytest.fixture(scope="module")
def dash_container(engine) -> str:
    """A running container, non-root as Dockerfile.serve's USER, to exec the healthcheck in."""
    reason = missing_base_reason(DEBIAN_STAND_IN, " (offline: ../shared/tools/local-docker base-images makes it)")
    if reason:
        pytest.skip(reason)
    name = f"healthcheck-test-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "--network", "host", "--user", "10001:10001", DEBIAN_STAND_IN,
           "sleep", "3600", timeout=600)
    try:
        shell = docker("exec", name, "readlink", "-f", "/bin/sh", timeout=60).stdout.strip()
        assert shell.endswith("/dash"), f"{DEBIAN_STAND_IN}'s /bin/sh is {shell}, not dash"
        yield name
    finally:
        docker("rm", "-f", name, check=False, timeout=600)


def run_healthcheck(container: str, model_name: str):
    return docker("exec", "-e", f"MODEL_NAME={model_name}", container, *healthcheck_argv(), check=False, timeout=60)


def test_healthcheck_passes_in_a_dash_container_once_the_model_is_available(dash_container, model_base):
    with local_server_on_port(model_base, healthcheck_port(healthcheck_argv()), name="pets"):
        result = run_healthcheck(dash_container, "pets")
    assert result.returncode == 0, result.stdout + result.stderr


def test_healthcheck_fails_in_a_dash_container_for_a_model_not_served(dash_container, model_base):
    with local_server_on_port(model_base, healthcheck_port(healthcheck_argv()), name="pets"):
        result = run_healthcheck(dash_container, "not_served")
    assert result.returncode != 0


def test_healthcheck_fails_in_a_dash_container_when_nothing_listens(dash_container):
    port = healthcheck_port(healthcheck_argv())
    if not port_is_free(port):
        pytest.skip(f"port {port} is in use on this machine")
    result = run_healthcheck(dash_container, "pets")
    assert result.returncode != 0 and "Connection refused" in result.stderr, result.stderr

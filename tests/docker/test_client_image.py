"""Dockerfile.client, the TensorFlow-free `predict` image k8s/evaluate/job.yaml runs: built on a
local Python 3.11 stand-in (python:3.11-slim cannot be pulled here), it classifies through REST
against the project's local server (`--network host`) and carries no TensorFlow.
Skips, saying why, without an engine, the stand-in, or network for the build."""
from __future__ import annotations

import json

import pytest

from tests.conftest import make_image_folder, start_local_server
from tests.docker.conftest import build, docker, missing_base_reason, network_reason
from tests.docker.test_serve_healthcheck import DEBIAN_STAND_IN

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PYTHON_STAND_IN = DEBIAN_STAND_IN  # Debian bookworm's Python 3.11, as python:3.11-slim
CLIENT_IMAGE = "transfer-serve/predict:test"


@pytest.fixture(scope="module")
def client_image(engine) -> str:
    hint = " (offline: ../shared/tools/local-docker base-images makes it)"
    for reason in (missing_base_reason(PYTHON_STAND_IN, hint), network_reason()):
        if reason:
            pytest.skip(reason)
    image, tag = PYTHON_STAND_IN.split(":")
    return build(CLIENT_IMAGE, "Dockerfile.client", f"PYTHON_IMAGE={image}", f"PYTHON_TAG={tag}")


def test_client_image_has_no_tensorflow(client_image):
    result = docker("run", "--rm", "--network", "none", "--entrypoint", "python", client_image,
                    "-c", "import importlib.util as u; print(u.find_spec('tensorflow') is None)", timeout=120)
    assert result.stdout.strip() == "True"


def test_client_image_evaluates_a_labelled_folder_through_rest_as_the_job_does(client_image, model_base, tmp_path):
    """k8s/evaluate/job.yaml's command, non-root on a read-only root with /tmp writable."""
    folder = make_image_folder(tmp_path / "photos", per_class=3)
    reports = tmp_path / "reports"
    reports.mkdir()
    reports.chmod(0o777)  # written by the image's uid 10001
    server = start_local_server(model_base)
    try:
        result = docker("run", "--rm", "--network", "host", "--user", "10001:10001", "--read-only",
                        "--tmpfs", "/tmp", "-w", "/reports", "-v", f"{folder}:/data/photos:ro", "-v", f"{reports}:/reports", client_image,
                        "evaluate", "/data/photos", "--rest", f"http://127.0.0.1:{server.rest_port}",
                        "--model", "pets", "--no-progress", "--output", "/reports/run",
                        check=False, timeout=300)
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((reports / "run" / "report.json").read_text())
    assert report, "an empty report.json"

"""End to end in containers: build both images (CPU variants), train a tiny model into a
volume, serve it with TensorFlow Serving, classify a JPEG through the client by gRPC and
REST. Needs a Docker engine; skipped with the reason otherwise.

    .venv/bin/python -m pytest -m docker tests/docker      # on a machine with Docker
"""
import subprocess
import time
import uuid

import pytest

from client import ModelClient
from tests.conftest import REPO, free_port, make_image_folder

pytestmark = pytest.mark.docker


def docker(*args, timeout=3600, check=True):
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
def images(request):
    request.getfixturevalue("docker_required")
    tag = uuid.uuid4().hex[:8]
    train, serve = f"train-job:test-{tag}", f"model-serve:test-{tag}"
    docker("build", "-t", train, "-f", "Dockerfile.train", "--build-arg", "VARIANT=", str(REPO))
    docker("build", "-t", serve, "-f", "Dockerfile.serve", str(REPO))
    yield train, serve
    docker("image", "rm", "-f", train, serve, check=False)


def test_train_in_a_container_then_serve_with_tf_serving_and_classify(images, tmp_path):
    train, serve = images
    photos = make_image_folder(tmp_path / "photos", per_class=12)
    models = tmp_path / "models"
    models.mkdir(mode=0o777)
    models.chmod(0o777)  # the containers run as uid 10001
    docker("run", "--rm", "-v", f"{photos}:/data:ro", "-v", f"{models}:/models", train,
           "--data-dir", "/data", "--weights", "none", "--img-size", "32", "--epochs", "1",
           "--fine-tune-epochs", "1", "--model-name", "cats_vs_dogs")
    assert (models / "cats_vs_dogs" / "1" / "saved_model.pb").exists()

    grpc_port, rest_port = free_port(), free_port()
    name = f"serve-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{grpc_port}:8500", "-p", f"127.0.0.1:{rest_port}:8501",
           "-v", f"{models}:/models:ro", serve)
    try:
        with ModelClient.rest(f"http://127.0.0.1:{rest_port}", "cats_vs_dogs", retries=30, backoff_seconds=1) as rest:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    if any(s.state == "AVAILABLE" for s in rest.status()):
                        break
                except Exception:  # noqa: BLE001 - still starting
                    time.sleep(1)
            jpeg = str(next((photos / "cat").iterdir()))
            by_rest = rest.predict_files([jpeg])[0]
        with ModelClient.grpc(f"127.0.0.1:{grpc_port}", "cats_vs_dogs") as grpc_client:
            by_grpc = grpc_client.predict_files([jpeg])[0]
        assert by_rest.ok and by_grpc.ok and by_rest.label == by_grpc.label in ("cat", "dog")
        assert by_rest.probabilities == pytest.approx(by_grpc.probabilities, abs=1e-5)
        assert by_grpc.version == 1
    finally:
        docker("rm", "-f", name, check=False)

"""The training image, built and run as a preempted pod would run it: train-job as the image's
non-root user on a read-only photo folder, killed (`docker kill`) during phase 2, run again on
the same /work volume, where it resumes and publishes exactly one complete version; then that
version is served by the project's own local server, and by TensorFlow Serving where its image
is on the engine, and classified through the client.

    DOCKER_BUILD_FLAGS="--network host" .venv/bin/python -m pytest tests/docker   # bridge-less engine

Skips, saying why, without an engine, without the base images, or without network for builds
(tests/docker/conftest.py). The first build on an engine takes minutes; later ones reuse its layers.
"""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import threading
import time
import uuid

import pytest

from client import ModelClient
from tests.conftest import free_port, make_image_folder
from tests.deploy.pins import TF_SERVING_VERSION
from tests.docker.conftest import docker

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MODEL = "cats_vs_dogs"  # the name serving/config/models.config serves
FINE_TUNE_EPOCHS = 10   # phase 2 long enough to be killed after its second epoch
TRAIN_ARGS = ["--data-dir", "/data", "--weights", "none", "--img-size", "64", "--epochs", "1",
              "--fine-tune-epochs", str(FINE_TUNE_EPOCHS), "--model-name", MODEL]
PHASE_2_EPOCH = re.compile(r"^\[fine[_ ]?tun\w*\] epoch (\d+)/(\d+)")
PHASE_1_EPOCH = re.compile(r"^\[feature[_ ]?extract\w*\] epoch \d+")
RESUMED = re.compile(r"^\[fine[_ ]?tun\w*\].*resum\w* after epoch (\d+)", re.IGNORECASE)
CONTAINER_UID = 10001  # Dockerfile.train's USER


@dataclasses.dataclass
class Run:
    lines: list[str]
    returncode: int = 0
    killed: bool = False
    seconds: float = 0.0

    def phase_2_epochs(self) -> list[int]:
        return [int(m.group(1)) for m in map(PHASE_2_EPOCH.match, self.lines) if m]

    def log(self) -> str:
        return "\n".join(self.lines[-60:])


def run_train_job(image: str, mounts: list[str], kill_after_phase_2_epochs: int | None = None,
                  timeout: float = 1200) -> Run:
    """`docker run` the job, streaming its log; `docker kill` it once it has logged that many
    phase-2 epochs. A watchdog kills it after `timeout` seconds."""
    name = f"train-job-test-{uuid.uuid4().hex[:8]}"
    command = ["docker", "run", "--rm", "--name", name, "--network", "none", *mounts, image, *TRAIN_ARGS]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    watchdog = threading.Timer(timeout, lambda: docker("kill", name, check=False))
    watchdog.start()
    run, started = Run([]), time.monotonic()
    try:
        for line in process.stdout:
            run.lines.append(line.rstrip("\n"))
            if kill_after_phase_2_epochs and not run.killed and len(run.phase_2_epochs()) >= kill_after_phase_2_epochs:
                # SIGKILL, as a preempted node would; refused if the job has already ended.
                run.killed = docker("kill", name, check=False).returncode == 0
        run.returncode = process.wait()
        run.seconds = time.monotonic() - started
    finally:
        watchdog.cancel()
        docker("rm", "-f", name, check=False)
    return run


@pytest.fixture(scope="module")
def job(train_image, tmp_path_factory):
    """Two runs of the image on the same volumes: the first killed in phase 2, the second resumed."""
    root = tmp_path_factory.mktemp("training-container")
    photos = make_image_folder(root / "photos", per_class=24)
    models, work = root / "models", root / "work"
    for volume in (models, work):
        volume.mkdir()
        volume.chmod(0o777)  # the container writes them as uid 10001
    mounts = ["-v", f"{photos}:/data:ro", "-v", f"{models}:/models", "-v", f"{work}:/work"]
    killed = run_train_job(train_image, mounts, kill_after_phase_2_epochs=2)
    resumed = run_train_job(train_image, mounts)
    for title, run in (("killed", killed), ("resumed", resumed)):  # shown by pytest -rA or on failure
        print(f"--- {title} run: exit {run.returncode} after {run.seconds:.0f}s\n{run.log()}")
    return {"killed": killed, "resumed": resumed, "photos": photos, "models": models, "work": work}


def test_killed_during_phase_2_the_job_resumes_on_the_same_work_dir(job):
    killed, resumed = job["killed"], job["resumed"]
    assert killed.killed, f"phase 2 ended before it could be killed:\n{killed.log()}"
    assert killed.returncode != 0 and not any("published" in line for line in killed.lines), killed.log()
    assert resumed.returncode == 0, resumed.log()
    resume_lines = [m for m in map(RESUMED.match, resumed.lines) if m]
    assert resume_lines, f"no phase-2 resume line:\n{resumed.log()}"
    after = int(resume_lines[0].group(1))
    done_before_kill = killed.phase_2_epochs()
    # The epoch whose line was followed by another one was checkpointed; the kill came after.
    assert done_before_kill[0] <= after <= done_before_kill[-1], (after, done_before_kill)
    assert not [line for line in resumed.lines if PHASE_1_EPOCH.match(line)], "phase 1 was trained again"
    total = int(PHASE_2_EPOCH.match(next(line for line in resumed.lines if PHASE_2_EPOCH.match(line))).group(2))
    assert resumed.phase_2_epochs() == list(range(after + 1, total + 1)), resumed.log()


def test_the_resumed_run_publishes_exactly_one_complete_version(job):
    model_dir = job["models"] / MODEL
    entries = sorted(p.name for p in model_dir.iterdir())  # lock and staging live beside it
    assert entries == ["1"], f"expected one version and no staging folder, found {entries}"
    version = model_dir / "1"
    for part in ("saved_model.pb", "variables/variables.index", "assets/labels.txt"):
        assert (version / part).is_file(), f"version 1 lacks {part}"
    assert (version / "assets" / "labels.txt").read_text().split() == ["cat", "dog"]


def test_the_container_trains_with_the_pinned_tensorflow_as_its_non_root_user(job):
    metrics = json.loads((job["work"] / "metrics.json").read_text())
    assert metrics["versions"]["tensorflow"] == TF_SERVING_VERSION
    assert metrics["versions"]["tensorflow-serving-api"].startswith(TF_SERVING_VERSION.rsplit(".", 1)[0] + ".")
    owners = {path.stat().st_uid for path in (job["models"] / MODEL / "1", job["work"] / "metrics.json")}
    assert owners == {CONTAINER_UID}


def classify_through_the_client(grpc_target: str, rest_url: str, jpeg: str, timeout: float = 180):
    """Wait until the model is AVAILABLE, then classify one photo over gRPC and over REST.
    TF Serving's REST predict answer names no version, so REST asks for version 1 by URL."""
    with ModelClient.rest(rest_url, MODEL, version=1) as rest:
        deadline = time.monotonic() + timeout
        while not _available(rest):
            assert time.monotonic() < deadline, f"{MODEL} not AVAILABLE at {rest_url} after {timeout}s"
            time.sleep(1)
        by_rest = rest.predict_files([jpeg])[0]
    with ModelClient.grpc(grpc_target, MODEL) as grpc_client:
        by_grpc = grpc_client.predict_files([jpeg])[0]
    for prediction in (by_rest, by_grpc):
        assert prediction.ok, prediction.error
        assert prediction.label in ("cat", "dog") and prediction.version == 1
    assert by_rest.probabilities == pytest.approx(by_grpc.probabilities, abs=1e-6)


def _available(client) -> bool:
    try:
        return any(status.state == "AVAILABLE" for status in client.status())
    except Exception:  # noqa: BLE001 - not up yet
        return False


def test_the_local_server_serves_the_published_version_to_the_client(job, tmp_path):
    grpc_port, rest_port = free_port(), free_port()
    log = tmp_path / "model-server.log"
    with open(log, "w") as output:
        server = subprocess.Popen([sys.executable, "-m", "serving", f"--model_name={MODEL}",
                                   f"--model_base_path={job['models'] / MODEL}", f"--port={grpc_port}",
                                   f"--rest_api_port={rest_port}"], stdout=output, stderr=subprocess.STDOUT)
    try:
        jpeg = str(next((job["photos"] / "cat").iterdir()))
        classify_through_the_client(f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}", jpeg)
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert server.returncode == 0, log.read_text()[-3000:]


def test_tf_serving_serves_the_published_version_to_the_client(job, serve_image):
    grpc_port, rest_port = free_port(), free_port()
    name = f"model-serve-test-{uuid.uuid4().hex[:8]}"
    # Host networking works with and without a bridge; TF Serving's last --port flag wins.
    docker("run", "-d", "--name", name, "--network", "host", "-v", f"{job['models']}:/models:ro", serve_image,
           f"--port={grpc_port}", f"--rest_api_port={rest_port}")
    try:
        jpeg = str(next((job["photos"] / "dog").iterdir()))
        classify_through_the_client(f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}", jpeg)
    finally:
        docker("rm", "-f", name, check=False)

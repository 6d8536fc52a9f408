"""Docker for tests/docker: what is missing becomes a skip that says so; nothing is pulled.

The images are built with the flags in DOCKER_BUILD_FLAGS (e.g. `--network host` on an engine
without a bridge network, where a build cannot download otherwise). The built images keep a
fixed tag, so the next run reuses their layers and rebuilds only what changed.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import pytest

from tests.conftest import REPO, docker_engine_reason
from tests.deploy.pins import TF_SERVING_VERSION

TRAIN_BASE = f"tensorflow/tensorflow:{TF_SERVING_VERSION}"
SERVE_BASE = f"tensorflow/serving:{TF_SERVING_VERSION}"
TRAIN_IMAGE = "transfer-serve/train-job:test"
SERVE_IMAGE = "transfer-serve/model-serve:test"


def docker(*args: str, timeout: float = 600, check: bool = True, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"`docker {' '.join(args[:4])}` exited with {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def build_flags() -> list[str]:
    return shlex.split(os.environ.get("DOCKER_BUILD_FLAGS", ""))


def image_id(ref: str) -> str | None:
    result = docker("image", "inspect", "--format", "{{.Id}}", ref, check=False, timeout=60)
    return result.stdout.strip() if result.returncode == 0 else None


def missing_base_reason(base: str, offline_hint: str) -> str | None:
    if image_id(base):
        return None
    return f"{base} is not on this Docker engine and tests never pull: `docker pull {base}`{offline_hint}"


def network_reason() -> str | None:
    """An engine without a bridge network (dockerd --bridge=none) builds without network."""
    if docker("network", "inspect", "bridge", check=False, timeout=60).returncode == 0:
        return None
    if "--network" in " ".join(build_flags()):
        return None
    return "this Docker engine has no bridge network, so a build cannot download: set DOCKER_BUILD_FLAGS='--network host'"


def build_env() -> dict:
    """The classic builder where the CLI has no buildx plugin (it refuses BuildKit without it)."""
    env = dict(os.environ)
    if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode != 0:
        env.setdefault("DOCKER_BUILDKIT", "0")
    return env


def build(tag: str, dockerfile: str, *build_args: str) -> str:
    """Build `dockerfile` as `tag`, removing the image the tag named before if it is now unused."""
    previous = image_id(tag)
    args = [a for pair in (("--build-arg", b) for b in build_args) for a in pair]
    # --force-rm: a failed step's container would keep a full copy of the image on some engines (vfs).
    result = docker("build", "--force-rm", *build_flags(), "-t", tag, "-f", dockerfile, *args, str(REPO),
                    timeout=3600, check=False, env=build_env())
    if result.returncode != 0:
        pytest.fail(f"`docker build -f {dockerfile}` failed (DOCKER_BUILD_FLAGS={os.environ.get('DOCKER_BUILD_FLAGS', '')!r}):\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    if previous and previous != image_id(tag):
        docker("image", "rm", previous, check=False, timeout=600)  # refused while a newer image uses its layers
    return tag


@pytest.fixture(scope="session")
def engine():
    reason = docker_engine_reason()
    if reason:
        pytest.skip(f"needs a Docker engine: {reason}")
    return shutil.which("docker")


@pytest.fixture(scope="session")
def train_image(engine) -> str:
    offline = f" (offline: ../shared/tools/local-docker base-images {TF_SERVING_VERSION} builds a stand-in)"
    for reason in (missing_base_reason(TRAIN_BASE, offline), network_reason()):
        if reason:
            pytest.skip(reason)
    return build(TRAIN_IMAGE, "Dockerfile.train", f"TF_VERSION={TF_SERVING_VERSION}", "VARIANT=")


@pytest.fixture(scope="session")
def serve_image(engine) -> str:
    reason = missing_base_reason(SERVE_BASE, "")  # its build downloads nothing
    if reason:
        pytest.skip(f"the TF Serving half: {reason}")
    return build(SERVE_IMAGE, "Dockerfile.serve", f"TF_VERSION={TF_SERVING_VERSION}")

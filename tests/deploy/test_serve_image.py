"""Dockerfile.serve without its base image (not pullable here): the HEALTHCHECK command and the
models.config rewrite for --build-arg MODEL_NAME, run from the Dockerfile's own text under dash,
the /bin/sh of tensorflow/serving's Ubuntu image. tests/docker/test_serve_healthcheck.py runs the
healthcheck in a container."""
from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import subprocess

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tests.conftest import REPO
from tests.deploy.dockerfile import (arg_default, healthcheck_argv, healthcheck_port, local_server_on_port,
                                     port_is_free, run_step)

CONFIG_DIR = REPO / "serving" / "config"
DASH = shutil.which("dash")
needs_dash = pytest.mark.skipif(DASH is None, reason="dash is not installed here (apt-get install dash)")


def served_models(config_file: pathlib.Path) -> dict[str, str]:
    config = text_format.Parse(config_file.read_text(), model_server_config_pb2.ModelServerConfig())
    return {m.name: m.base_path for m in config.model_config_list.config}


def run_healthcheck_under_dash(model_name: str) -> subprocess.CompletedProcess:
    """The HEALTHCHECK command as a dash `sh -c` would run it (the image's /bin/sh)."""
    return subprocess.run([DASH, "-c", shlex.join(healthcheck_argv())], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "MODEL_NAME": model_name})


def test_healthcheck_is_exec_form_and_never_needs_sh():
    argv = healthcheck_argv()
    assert os.path.basename(argv[0]) not in ("sh", "dash"), argv
    assert "/dev/tcp/" not in argv[0] and argv[0] == "bash", "only bash opens /dev/tcp (dash has none)"


def test_the_default_model_name_is_the_one_models_config_serves():
    assert served_models(CONFIG_DIR / "models.config") == {arg_default("MODEL_NAME"): f"/models/{arg_default('MODEL_NAME')}"}


@needs_dash
def test_healthcheck_passes_under_dash_once_the_model_is_available(model_base):
    with local_server_on_port(model_base, healthcheck_port(healthcheck_argv()), name="pets"):
        result = run_healthcheck_under_dash("pets")
    assert result.returncode == 0, result.stderr


@needs_dash
def test_healthcheck_fails_for_a_model_the_server_does_not_serve(model_base):
    with local_server_on_port(model_base, healthcheck_port(healthcheck_argv()), name="pets"):
        result = run_healthcheck_under_dash("not_served")
    assert result.returncode != 0


@needs_dash
def test_healthcheck_fails_when_nothing_listens():
    port = healthcheck_port(healthcheck_argv())
    if not port_is_free(port):
        pytest.skip(f"port {port} is in use on this machine")
    assert run_healthcheck_under_dash("pets").returncode != 0


def rewrite_config(tmp_path: pathlib.Path, model_name: str) -> tuple[subprocess.CompletedProcess, pathlib.Path]:
    """Dockerfile.serve's models.config RUN step under dash, on a copy of serving/config."""
    config_dir = shutil.copytree(CONFIG_DIR, tmp_path / "config")
    script = run_step("/config/models.config").replace("/config/", f"{config_dir}/")
    result = subprocess.run([DASH, "-c", script], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "MODEL_NAME": model_name})
    return result, config_dir / "models.config"


@needs_dash
def test_model_name_build_arg_renames_the_served_model_and_its_folder(tmp_path):
    result, config = rewrite_config(tmp_path, "dogs_v2")
    assert result.returncode == 0, result.stderr
    assert served_models(config) == {"dogs_v2": "/models/dogs_v2"}


@needs_dash
@pytest.mark.parametrize("bad_name", ["", "a/b", "x|y", "../up", 'q"uote'])
def test_model_name_build_arg_refuses_a_name_that_is_not_a_folder_name(tmp_path, bad_name):
    result, config = rewrite_config(tmp_path, bad_name)
    assert result.returncode != 0 and "MODEL_NAME" in result.stderr

"""One TensorFlow release for training, export and serving: the one the pinned TF Serving
image is built from, stated once in TF_SERVING_VERSION (repository root).

TensorFlow guarantees graph compatibility only within a release line, and TF Serving's
maintainers answer "Op type not registered" with "export with the TensorFlow version the server
runs". Every other place that names the release is a copy checked here; bumping it means
editing TF_SERVING_VERSION and the places these tests then name.
"""
import importlib.metadata
import re
import tomllib

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO
from tests.deploy.pins import RELEASE_LINE
from tests.deploy.pins import TF_SERVING_VERSION as PIN


def dockerfile_arg(name: str, dockerfile: str) -> str | None:
    match = re.search(rf"^ARG {name}=(\S+)$", (REPO / dockerfile).read_text(), re.MULTILINE)
    return match and match.group(1)


def requirement_specifiers(lines, name: str) -> list[str]:
    found = [Requirement(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [str(r.specifier) for r in found if r.name.lower().replace("_", "-") == name]


def project_dependencies() -> list[str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["dependencies"]


def test_the_pin_is_a_full_release_number():
    assert re.fullmatch(r"\d+\.\d+\.\d+", PIN), f"TF_SERVING_VERSION must hold one version like 2.20.0, not {PIN!r}"


@pytest.mark.parametrize(("dockerfile", "image"), [("Dockerfile.train", "tensorflow/tensorflow"),
                                                   ("Dockerfile.serve", "tensorflow/serving")])
def test_dockerfiles_build_from_the_pinned_release(dockerfile, image):
    assert dockerfile_arg("TF_VERSION", dockerfile) == PIN, f"{dockerfile}: ARG TF_VERSION must be {PIN}"
    from_lines = re.findall(r"^FROM (\S+)", (REPO / dockerfile).read_text(), re.MULTILINE)
    assert from_lines == [f"{image}:${{TF_VERSION}}${{VARIANT}}"], f"{dockerfile}: FROM must use ARG TF_VERSION"


@pytest.mark.parametrize("package", ["tensorflow", "tensorflow-serving-api"])
def test_pyproject_pins_the_release_line(package):
    assert requirement_specifiers(project_dependencies(), package) == [f"=={RELEASE_LINE}.*"]


def test_the_training_image_installs_its_dependencies_with_the_base_images_tensorflow_as_a_constraint():
    """pyproject.toml's `tensorflow` requirement is then met by the base image, never reinstalled."""
    dockerfile = (REPO / "Dockerfile.train").read_text()
    constraint = re.search(r"print\('tensorflow==' \+ version\('tensorflow'\)\)\"[\s\\]*> (\S+)", dockerfile)
    assert constraint, "Dockerfile.train must write the base image's tensorflow==VERSION to a constraints file"
    assert re.search(rf"pip install [^\n]*-c {re.escape(constraint.group(1))} /app\b", dockerfile)


@pytest.mark.parametrize("package", ["tensorflow", "tensorflow-serving-api"])
def test_the_installed_environment_runs_the_release_line(package):
    installed = importlib.metadata.version(package)
    assert installed.startswith(RELEASE_LINE + "."), f"{package} {installed} installed, {RELEASE_LINE}.x pinned"

"""Shared fixtures: synthetic image folders, tiny models, and the optional offline assets.

Nothing here needs the network or ../shared. Tests that want real photos or real weights
use `shared_photos` / `shared_weights`, which skip with a reason when TRANSFER_SHARED_DIR
(or ../shared beside the checkout) is absent.
"""
from __future__ import annotations

import io
import os
import pathlib
import random

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_IMG = 32  # MobileNetV2's smallest input: fast, and still has every layer


def shared_dir() -> pathlib.Path | None:
    candidates = [os.environ.get("TRANSFER_SHARED_DIR"), str(REPO.parent / "shared")]
    for candidate in candidates:
        if candidate and (pathlib.Path(candidate) / "README.md").exists():
            return pathlib.Path(candidate)
    return None


def _shared_asset(relative: str, what: str) -> pathlib.Path:
    root = shared_dir()
    path = root / relative if root else None
    if not path or not path.exists():
        pytest.skip(f"needs the offline {what}: set TRANSFER_SHARED_DIR to a folder with {relative}")
    return path


@pytest.fixture(scope="session")
def shared_photos() -> pathlib.Path:
    return _shared_asset("data/cats_vs_dogs", "photos")


@pytest.fixture(scope="session")
def shared_weights() -> pathlib.Path:
    return _shared_asset("pretrained/mobilenet_v2_1.0_imagenet_no_top.weights.h5", "MobileNetV2 weights")


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def synthetic_photo(label: int, rng: random.Random, size=None) -> Image.Image:
    """A noisy image whose colour depends on its class, so a model can tell them apart."""
    width, height = size or (rng.randint(40, 90), rng.randint(40, 90))
    base = np.array([[200, 60, 40], [40, 80, 200], [60, 190, 70], [200, 200, 60]][label % 4], np.float32)
    noise = np.random.default_rng(rng.randint(0, 2**31)).normal(0, 40, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def make_image_folder(root: pathlib.Path, classes=("cat", "dog"), per_class=20, seed=0) -> pathlib.Path:
    rng = random.Random(seed)
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / f"{name}.{i}.jpg").write_bytes(encode(synthetic_photo(label, rng)))
    return root


@pytest.fixture
def image_folder(tmp_path) -> pathlib.Path:
    return make_image_folder(tmp_path / "photos")


def calibrate_batchnorm(base, images: np.ndarray) -> None:
    """Give a randomly initialised base real BN statistics (from `images`), so that in
    inference mode its features vary between images instead of collapsing to ~1e-11."""
    import keras

    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    was_trainable = base.trainable
    base.trainable = True  # a frozen BN layer ignores training=True in Keras 3
    for layer in norms:
        layer.momentum = 0.0
    base(images, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
    base.trainable = was_trainable


def tiny_classifier(num_classes=2, img_size=TINY_IMG, seed=0, calibration_images=16):
    """A MobileNetV2 classifier with random but calibrated weights, for fast tests."""
    import keras

    from training.model import build_classifier

    keras.utils.set_random_seed(seed)
    classifier = build_classifier(num_classes, img_size, "none")
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (calibration_images, img_size, img_size, 3)).astype(np.float32)
    calibrate_batchnorm(classifier.base, images)
    return classifier


# --- a served model ------------------------------------------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export_tiny_model(base_path: pathlib.Path, name: str = "pets", seed: int = 0, **config_overrides) -> pathlib.Path:
    """A calibrated random MobileNetV2 at TINY_IMG px, exported through the real publish path."""
    from training import export
    from training.config import TrainConfig
    from training.data import load_image_folder

    folder = make_image_folder(base_path.parent / f"photos-{name}-{seed}", per_class=10, seed=seed)
    data = load_image_folder(str(folder))
    classifier = tiny_classifier(seed=seed)
    config = TrainConfig(data_dir=str(folder), img_size=TINY_IMG, weights="none", model_base_path=str(base_path),
                         model_name=name, **config_overrides)
    metrics = {"data": {"source": data.source, "class_names": data.class_names, "identity": data.identity,
                        "splits": {n: {"images": s.count} for n, s in data.splits().items()}},
               "phases": {"fine_tuning": {"test_accuracy": 0.5, "test_loss": 0.7, "seconds": 1.0}}}
    return pathlib.Path(export.export_from_training(config, classifier.model, data, metrics)["path"])


@pytest.fixture(scope="session")
def model_base(tmp_path_factory) -> pathlib.Path:
    """<base>/pets/1: one exported version of a tiny two-class model."""
    base = tmp_path_factory.mktemp("served") / "models"
    export_tiny_model(base)
    return base


@pytest.fixture(scope="session")
def cat_jpeg() -> bytes:
    return encode(synthetic_photo(0, random.Random(1), size=(50, 40)), "JPEG")


def start_local_server(base: pathlib.Path, name: str = "pets", poll_seconds: float = 0.2, **options):
    from serving.registry import ModelRegistry, single_model_config
    from serving.server import LocalServer

    configs = options.pop("configs", None) or [single_model_config(name, str(base / name))]
    registry = ModelRegistry(configs, poll_seconds=poll_seconds, **options.pop("registry_options", {}))
    grpc_port = options.pop("grpc_port_override", None) or free_port()
    rest_port = options.pop("rest_port_override", None) or free_port()
    return LocalServer(registry, grpc_port=grpc_port, rest_port=rest_port, grace_seconds=5, **options).start()


@pytest.fixture
def local_server(model_base):
    server = start_local_server(model_base)
    yield server
    server.stop()


# --- Docker (pytest-docker) ------------------------------------------------------------------

def docker_engine_reason() -> str | None:
    """None when a Docker engine answers; otherwise why the docker tests skip."""
    import shutil
    import subprocess

    if shutil.which("docker") is None:
        return "no docker CLI on this machine"
    try:
        result = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                                text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"docker info failed: {err}"
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no answer"])[0]
        return f"no Docker engine reachable ({first})"
    return None


@pytest.fixture(scope="session")
def docker_compose_file():
    return str(REPO / "tests" / "docker" / "docker-compose.yml")


@pytest.fixture(scope="session")
def docker_required():
    reason = docker_engine_reason()
    if reason:
        pytest.skip(f"needs a Docker engine: {reason}")

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


@pytest.fixture(scope="session")
def shared_photos() -> pathlib.Path:
    root = shared_dir()
    path = root / "data" / "cats_vs_dogs" if root else None
    if not path or not path.is_dir():
        pytest.skip("needs the offline photos: set TRANSFER_SHARED_DIR to a folder with data/cats_vs_dogs")
    return path


@pytest.fixture(scope="session")
def shared_weights() -> pathlib.Path:
    root = shared_dir()
    path = root / "pretrained" / "mobilenet_v2_1.0_imagenet_no_top.weights.h5" if root else None
    if not path or not path.is_file():
        pytest.skip("needs the offline MobileNetV2 weights: set TRANSFER_SHARED_DIR to a folder with pretrained/")
    return path


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

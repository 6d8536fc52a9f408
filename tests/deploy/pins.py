"""The TensorFlow release the project pins, read from TF_SERVING_VERSION (its one statement)."""
from tests.conftest import REPO

TF_SERVING_VERSION = (REPO / "TF_SERVING_VERSION").read_text().strip()
RELEASE_LINE = ".".join(TF_SERVING_VERSION.split(".")[:2])  # 2.20.0 -> 2.20: patch releases are compatible

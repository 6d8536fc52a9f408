"""Fakes shared by the publishing tests: a small recognisable servable written on any tf.io.gfile path,
the model directory as TF Serving and copiers see it, and a ram:// base path."""
import uuid

import pytest
import tensorflow as tf

from model_api import signature as sig
from publishing import locking, publish, storage


IDENTITY = {"kind": "folder", "fingerprint": "sha256:same-photos"}
PARTS = 5  # files a fake servable holds besides saved_model.pb


def fake_servable(writer: str, accuracy: float = 0.9, pause: float = 0.0):
    """A write() that puts a small, recognisable version on any tf.io.gfile path."""
    import time

    def write(directory, version):
        storage.write_json(tf.io.gfile.join(directory, sig.MODEL_CARD_FILE),
                           {"data_identity": IDENTITY, "split": {"s": 1}, "test_metrics": {"accuracy": accuracy},
                            "writer": writer, "version": version})
        for i in range(PARTS):
            storage.write_text(tf.io.gfile.join(directory, "variables", f"part-{i}"), writer)
            time.sleep(pause)
        storage.write_text(tf.io.gfile.join(directory, storage.SAVED_MODEL_FILE), writer)
    return write


@pytest.fixture
def no_servable_check(monkeypatch):
    """These tests are about the file system; the servable gate has its own tests."""
    monkeypatch.setattr(publish, "check_servable", lambda staged, gate: {})


def publish_fake(base, accuracy=0.9, version=None, write=None, force=False, keep=0, serving_config=None):
    gate = publish.Gate(test_accuracy=accuracy, data_identity=IDENTITY, split={"s": 1}, force=force)
    return publish.publish(str(base), "m", write or fake_servable("t", accuracy), gate, version=version, keep=keep,
                           serving_config=serving_config)


def entries(model_dir) -> list[str]:
    """What TF Serving, copiers and people see in a model directory."""
    return sorted(n.rstrip("/") for n in tf.io.gfile.listdir(str(model_dir)))


def area_entries(model_dir) -> list[str]:
    """The publish area beside the model directory, without its lock file."""
    area = locking.publish_area(str(model_dir))
    return sorted(n.rstrip("/") for n in tf.io.gfile.listdir(area) if n.rstrip("/") != locking.LOCK_FILE)


def assert_complete(version_path: str, writer: str | None = None) -> str:
    """Every file of a fake servable is there and written by one writer; returns that writer."""
    join = tf.io.gfile.join
    card = storage.read_json(join(version_path, sig.MODEL_CARD_FILE))
    writer = writer or card["writer"]
    for name in [f"variables/part-{i}" for i in range(PARTS)] + [storage.SAVED_MODEL_FILE]:
        with tf.io.gfile.GFile(join(version_path, name)) as f:
            assert f.read() == writer, f"{version_path}/{name} was not written by {writer}"
    return writer


@pytest.fixture
def ram_base():
    base = f"ram://publish-{uuid.uuid4().hex[:8]}/models"
    yield base
    if tf.io.gfile.exists(base):
        storage.remove_tree(base)

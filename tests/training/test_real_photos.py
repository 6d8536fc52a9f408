"""On real photos with the real ImageNet weights (../shared, or TRANSFER_SHARED_DIR): the job
learns, exports, and the exported model classifies a real JPEG like the Keras model.
Skipped with the reason where those assets are absent."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO

pytestmark = pytest.mark.shared


def test_short_real_run_learns_and_exports_a_model_that_knows_a_cat(shared_photos, shared_weights, tmp_path):
    work, models = tmp_path / "work", tmp_path / "models"
    result = subprocess.run(
        [sys.executable, "-m", "training", "--data-dir", str(shared_photos), "--weights", str(shared_weights),
         "--max-images", "300", "--epochs", "5", "--fine-tune-epochs", "1", "--learning-rate", "1e-3", "--work-dir", str(work),
         "--model-base-path", str(models), "--min-accuracy", "0.8"],
        cwd=REPO, capture_output=True, text=True, timeout=1200, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["test_accuracy"]["feature_extraction"] >= 0.8
    assert metrics["data"]["splits"]["train"]["images"] == 240
    served = tf.saved_model.load(str(models / "cats_vs_dogs" / "1")).signatures["serving_default"]
    cat = (shared_photos / "cat" / "cat.2999.jpg").read_bytes()
    dog = (shared_photos / "dog" / "dog.2999.jpg").read_bytes()
    out = served(image_bytes=tf.constant([cat, dog]))
    assert [x.decode() for x in out["labels"].numpy()] == ["cat", "dog"]
    assert np.all(out["probabilities"].numpy().max(axis=1) > 0.8)

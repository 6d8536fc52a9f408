"""Two workers on 127.0.0.1, each with its own TF_CONFIG, run the real training job under
MultiWorkerMirroredStrategy: they finish with identical weights and only the chief writes
the run's outputs and exports."""
import json
import os
import subprocess
import sys

import keras
import numpy as np

from tests.conftest import REPO, TINY_IMG, free_port, make_image_folder, tiny_classifier


def test_two_workers_train_identically_and_only_the_chief_exports(tmp_path):
    folder = make_image_folder(tmp_path / "photos", per_class=16)
    work, models = tmp_path / "work", tmp_path / "models"
    # Calibrated BN statistics make the features vary, so training really moves the weights.
    weights = tmp_path / "calibrated.weights.h5"
    base = tiny_classifier().base
    base.save_weights(weights)
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    args = ["--data-dir", str(folder), "--weights", str(weights), "--learning-rate", "1e-2", "--img-size", str(TINY_IMG), "--batch-size", "8",
            "--epochs", "2", "--fine-tune-epochs", "1", "--work-dir", str(work), "--model-base-path", str(models),
            "--model-name", "pets"]
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        log = open(tmp_path / f"worker-{index}.log", "w")
        workers.append((subprocess.Popen([sys.executable, "-m", "training", *args], cwd=REPO, env=env,
                                         stdout=log, stderr=subprocess.STDOUT), log))
    for process, log in workers:
        process.wait(timeout=600)
        log.close()
    logs = [(tmp_path / f"worker-{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p, _ in workers] == [0, 0], logs[0][-3000:] + logs[1][-3000:]

    # The chief (worker 0) wrote the run's outputs and published version 1; worker 1 wrote only
    # into its scratch folder and published nothing.
    assert (work / "metrics.json").exists() and (models / "pets" / "1" / "saved_model.pb").exists()
    assert os.listdir(models / "pets") == ["1"]
    assert "[export] published" in logs[0] and "[export]" not in logs[1]
    scratch = work / "workers" / "worker-1"
    assert (scratch / "model.keras").exists()

    import training.model  # noqa: F401  registers the custom model class

    chief = keras.models.load_model(work / "model.keras").get_weights()
    other = keras.models.load_model(scratch / "model.keras").get_weights()
    assert len(chief) == len(other)
    for a, b in zip(chief, other):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    trained = keras.models.load_model(work / "model.keras")
    fine_tuned = trained.get_layer("mobilenetv2_1.00_32").get_layer("Conv_1").get_weights()[0]
    np.testing.assert_raises(AssertionError, np.testing.assert_allclose, fine_tuned,
                             base.get_layer("Conv_1").get_weights()[0], atol=1e-6)
    history = json.loads((work / "metrics.json").read_text())["phases"]
    assert len(history["feature_extraction"]["history"]["loss"]) == 2
    assert len(history["fine_tuning"]["history"]["loss"]) == 1

"""The job as a user runs it: one command, one-line errors, resumable after a kill."""
import json
import os
import random
import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY_IMG, encode, make_image_folder, synthetic_photo


def run_job(*args, env_extra=None, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_one_class_folder_is_a_one_line_error(tmp_path):
    folder = make_image_folder(tmp_path / "p", classes=("cat",), per_class=2)
    result = run_job("--data-dir", str(folder), "--weights", "none", "--work-dir", str(tmp_path / "w"))
    assert result.returncode == 2
    assert "at least 2 classes" in error_line(result)
    assert "Traceback" not in result.stderr


def test_empty_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_job("--data-dir", str(tmp_path / "empty"), "--weights", "none", "--work-dir", str(tmp_path / "w"))
    assert result.returncode == 2 and "at least 2 classes" in error_line(result)


def test_missing_weights_file_is_a_one_line_error(tmp_path, image_folder):
    result = run_job("--data-dir", str(image_folder), "--weights", str(tmp_path / "nope.weights.h5"),
                     "--work-dir", str(tmp_path / "w"))
    assert result.returncode == 2 and "weights file not found" in error_line(result)


def test_unknown_tfds_dataset_is_a_one_line_error(tmp_path):
    result = run_job("--dataset", "no_such_dataset_xyz", "--tfds-data-dir", str(tmp_path / "tfds"),
                     "--weights", "none", "--work-dir", str(tmp_path / "w"))
    assert result.returncode == 2 and "unknown TFDS dataset 'no_such_dataset_xyz'" in error_line(result)


def test_more_epochs_continue_a_finished_run_and_other_changes_are_one_line_errors(tmp_path):
    """Kill-and-resume exactness is tests/training/test_resume.py; this pins what a user sees."""
    folder = make_image_folder(tmp_path / "photos", per_class=8)
    work = tmp_path / "work"
    common = ["--data-dir", str(folder), "--weights", "none", "--img-size", str(TINY_IMG), "--batch-size", "4",
              "--epochs", "1", "--work-dir", str(work), "--no-export"]
    assert run_job(*common, "--fine-tune-epochs", "1").returncode == 0
    before = json.loads((work / "metrics.json").read_text())["phases"]["fine_tuning"]

    more = run_job(*common, "--fine-tune-epochs", "2")
    assert more.returncode == 0, more.stderr[-2000:]
    assert "[feature_extraction] already complete" in more.stdout
    assert "[fine_tuning] resuming after epoch 2" in more.stdout and "1 of 2 epochs done, training 1 more" in more.stdout
    assert "[fine_tuning] epoch 3/3" in more.stdout and "[fine_tuning] epoch 2/3" not in more.stdout
    fine = json.loads((work / "metrics.json").read_text())["phases"]["fine_tuning"]
    assert fine["epochs"] == 2 and len(fine["history"]["loss"]) == 2
    # Timings: apart, and summed over both processes; the throughput is of training alone, over both epochs.
    assert fine["train_seconds"] > before["train_seconds"] > 0 and fine["cache_seconds"] > before["cache_seconds"]
    assert fine["seconds"] == pytest.approx(fine["cache_seconds"] + fine["train_seconds"] + fine["evaluate_seconds"])
    assert fine["images_per_second"] == pytest.approx(fine["train_images"] * 2 / fine["train_seconds"])

    changed = run_job(*common, "--fine-tune-epochs", "2", "--learning-rate", "0.001", "--shuffle-buffer", "7")
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    line = error_line(changed)
    assert "--learning-rate 0.0001 there, 0.001 now" in line and "--shuffle-buffer 1000 there, 7 now" in line
    assert "--restart" in line and "--work-dir" in line
    fewer = run_job(*common, "--fine-tune-epochs", "1")
    assert fewer.returncode == 2 and "already trained 2 epochs" in error_line(fewer)

    fresh = run_job(*common, "--fine-tune-epochs", "1", "--learning-rate", "0.001", "--restart")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert "[restart] discarded the checkpoints" in fresh.stdout and "resuming" not in fresh.stdout
    assert "[cache] reusing" in fresh.stdout, "caches of unchanged settings survive --restart"


def test_mixed_precision_run_trains_and_exports(tmp_path):
    folder = make_image_folder(tmp_path / "photos", per_class=8)
    result = run_job("--data-dir", str(folder), "--weights", "none", "--img-size", str(TINY_IMG), "--batch-size", "4",
                     "--epochs", "1", "--fine-tune-epochs", "1", "--mixed-precision", "--work-dir", str(tmp_path / "w"),
                     "--model-base-path", str(tmp_path / "models"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "models" / "photos" / "1" / "saved_model.pb").exists()
    assert json.loads((tmp_path / "w" / "metrics.json").read_text())["config"]["mixed_precision"] is True


def test_export_runs_alone_on_a_trained_work_dir(tmp_path):
    folder = make_image_folder(tmp_path / "photos", per_class=8)
    common = ["--data-dir", str(folder), "--weights", "none", "--img-size", str(TINY_IMG), "--batch-size", "4",
              "--epochs", "1", "--fine-tune-epochs", "0", "--work-dir", str(tmp_path / "w"),
              "--model-base-path", str(tmp_path / "models"), "--model-name", "pets"]
    trained = run_job(*common, "--no-export")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert not (tmp_path / "models").exists()
    metrics = json.loads((tmp_path / "w" / "metrics.json").read_text())
    # The report's accuracy as served without TTA is the phase's own test accuracy.
    assert metrics["accuracy_by_tta"]["test"]["none"] == metrics["test_accuracy"]["feature_extraction"]
    assert set(metrics["accuracy_by_tta"]["validation"]) == {"none", "flip"}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    resized = subprocess.run([sys.executable, "-m", "training.export", *common, "--img-size", str(TINY_IMG + 8)],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resized.returncode == 2, resized.stderr[-2000:]
    assert error_line(resized).startswith(f"error: --img-size {TINY_IMG + 8} (trained: {TINY_IMG}) differ from")
    assert not (tmp_path / "models").exists()
    exported = subprocess.run([sys.executable, "-m", "training.export", *common], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert json.loads(exported.stdout[exported.stdout.index("{"):])["version"] == 1
    assert (tmp_path / "models" / "pets" / "1" / "assets.extra" / "tf_serving_warmup_requests").exists()
    again = subprocess.run([sys.executable, "-m", "training.export", *common, "--version", "1"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "already exists" in again.stderr


def test_a_photo_replaced_in_place_is_a_one_line_refusal_and_restart_rebuilds_the_caches(tmp_path):
    """Same file names, same count, other bytes: the data's fingerprint is a run setting and a cache setting."""
    folder = make_image_folder(tmp_path / "photos", per_class=6)
    work = tmp_path / "work"
    common = ["--data-dir", str(folder), "--weights", "none", "--img-size", str(TINY_IMG), "--batch-size", "4",
              "--epochs", "1", "--fine-tune-epochs", "0", "--work-dir", str(work), "--no-export"]
    first = run_job(*common)
    assert first.returncode == 0, first.stderr[-2000:]
    tested = json.loads((work / "metrics.json").read_text())["data"]["identity"]["fingerprint"]
    photo = folder / "cat" / "cat.0.jpg"
    photo.write_bytes(encode(synthetic_photo(1, random.Random(5))))  # a dog's colours, in place

    changed = run_job(*common)
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    line = error_line(changed)
    assert f"--data-dir content '{tested[:19]}…' there, 'sha256:" in line, line
    assert line.endswith("add --restart to discard it, or use a new --work-dir"), line
    assert "[cache] reusing" not in changed.stdout, "refused before training on stale caches"

    fresh = run_job(*common, "--restart")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert "[cache] reusing" not in fresh.stdout, "the caches of the old photos must be recomputed"
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["data"]["identity"]["fingerprint"] not in (tested, None)
    assert metrics["data"]["identity"]["files"] == 12


@pytest.mark.parametrize("command", ["training.__main__", "training.export"])
def test_a_malformed_serving_config_fails_before_training_in_one_line(tmp_path, monkeypatch, capsys, command):
    import importlib

    from training import data

    for name in ("KERAS_HOME", "MPLCONFIGDIR"):
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.setattr(data, "load", lambda config: pytest.fail("read the data before checking --serving-config"))
    (tmp_path / "models.config").write_text("model_config_list { config { name: 'm' version_labels { key: 's' } ")
    argv = ["--weights", "none", "--work-dir", str(tmp_path / "w"), "--model-base-path", str(tmp_path / "models"),
            "--keep", "1", "--serving-config", str(tmp_path / "models.config")]
    assert importlib.import_module(command).main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: --serving-config ") and "models.config" in err, err
    assert not (tmp_path / "models").exists()

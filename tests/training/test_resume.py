"""A job killed with SIGKILL (a preempted pod: no cleanup at all) in phase 1, between the phases
or in phase 2, then run again, ends with the weights of a job that was never interrupted."""
import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.conftest import REPO, TINY_IMG, make_image_folder, tiny_classifier

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _args(folder, weights, work):
    return ["--data-dir", str(folder), "--weights", str(weights), "--img-size", str(TINY_IMG), "--batch-size", "4",
            "--epochs", "3", "--fine-tune-epochs", "3", "--work-dir", str(work), "--no-export"]


def _run(args):
    result = subprocess.run([sys.executable, "-m", "training", *args], cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def _kill_at(args, line_prefix):
    process = subprocess.Popen([sys.executable, "-m", "training", *args], cwd=REPO, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in process.stdout:
            if line.startswith(line_prefix):
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.wait(timeout=120)
    assert process.returncode == -signal.SIGKILL, f"the job ended before printing {line_prefix!r}"


def _weights(work):
    import training.model  # noqa: F401  registers the custom model class

    return keras.models.load_model(work / "model.keras").get_weights()


def _fine_tuning_movement(work, weights_file) -> float:
    """How far phase 2 moved the base from the weights file: what the difference is measured against."""
    import training.model  # noqa: F401

    base = tiny_classifier().base
    base.load_weights(weights_file)
    trained = keras.models.load_model(work / "model.keras").get_layer(base.name)
    return max(float(np.max(np.abs(a - b))) for a, b in zip(trained.get_weights(), base.get_weights()))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    folder = make_image_folder(root / "photos", per_class=12)
    weights = root / "calibrated.weights.h5"  # real BN statistics, so that training moves the weights
    tiny_classifier().base.save_weights(weights)
    _run(_args(folder, weights, root / "whole"))
    return root, folder, weights, _weights(root / "whole")


@pytest.mark.parametrize("where, kill_after, resumed_line", [
    ("in phase 1", "[feature_extraction] epoch 1/3", "[feature_extraction] resuming after epoch"),
    ("between the phases", "[feature_extraction] test accuracy", "[feature_extraction] already complete"),
    ("in phase 2", "[fine_tuning] epoch 4/6", "[fine_tuning] resuming after epoch"),
])
def test_a_killed_job_resumes_to_the_weights_of_an_uninterrupted_one(uninterrupted, where, kill_after,
                                                                      resumed_line):
    root, folder, weights, expected = uninterrupted
    work = root / where.replace(" ", "-")
    args = _args(folder, weights, work)
    _kill_at(args, kill_after)
    output = _run(args)
    assert resumed_line in output, output[-3000:]
    got = _weights(work)
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(got, expected))
    moved = _fine_tuning_movement(root / "whole", weights)
    print(f"\n[resume] killed {where}: max weight difference to the uninterrupted run {difference:.3g} "
          f"(training moved the weights by up to {moved:.3g})")
    assert difference <= 1e-6
    histories = [json.loads((w / "metrics.json").read_text())["phases"] for w in (work, root / "whole")]
    for phase in ("feature_extraction", "fine_tuning"):
        np.testing.assert_allclose(histories[0][phase]["history"]["loss"], histories[1][phase]["history"]["loss"],
                                   rtol=1e-6)


@pytest.mark.parametrize("schedule, conflict", [("constant", None), ("cosine", "--epochs 3 there, 5 now"),
                                                ("step", "--epochs 3 there, 5 now")])
def test_more_epochs_continue_a_constant_rate_but_not_a_schedule_that_spans_the_phase(tmp_path, schedule, conflict):
    """cosine and step are functions of the phase's epoch count: 3 epochs then 2 more is no 5-epoch run."""
    import dataclasses

    from training import checkpoints
    from training.config import TrainConfig

    config = TrainConfig(work_dir=str(tmp_path), epochs=3, fine_tune_epochs=2, lr_schedule=schedule)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    for phase, epoch in (("feature_extraction", 3), ("fine_tuning", 5)):
        checkpoints.PhaseCheckpoint(checkpoints.phase_dir(config.work_dir, phase), model,
                                    keras.optimizers.RMSprop(), checkpoints.phase_settings(config, phase, 1, "sha256:x")
                                    ).save(epoch, {}, {})
    checkpoints.check_resumable(config, 1)
    more_fine_tuning = dataclasses.replace(config, fine_tune_epochs=4)
    more = dataclasses.replace(config, epochs=5)
    if conflict is None:
        checkpoints.check_resumable(more_fine_tuning, 1)
        return
    with pytest.raises(checkpoints.ResumeConflict, match="--fine-tune-epochs 2 there, 4 now.*--restart"):
        checkpoints.check_resumable(more_fine_tuning, 1)
    with pytest.raises(checkpoints.ResumeConflict, match=f"feature_extraction run .*{conflict}.*--restart"):
        checkpoints.check_resumable(more, 1)


def test_other_photos_are_a_conflict_once_the_data_is_read(tmp_path):
    """Checked twice by the job: before any work (the content is not known yet), then with the data's fingerprint."""
    from training import checkpoints
    from training.config import TrainConfig

    config = TrainConfig(work_dir=str(tmp_path), data_dir="/photos", epochs=1, fine_tune_epochs=0)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    tested, replaced = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    checkpoints.PhaseCheckpoint(checkpoints.phase_dir(config.work_dir, "feature_extraction"), model,
                                keras.optimizers.RMSprop(), checkpoints.phase_settings(config, "feature_extraction", 1,
                                                                                       tested)).save(1, {}, {})
    checkpoints.check_resumable(config, 1)
    checkpoints.check_resumable(config, 1, tested)
    with pytest.raises(checkpoints.ResumeConflict, match=r"other settings \(--data-dir content 'sha256:a{12}…' there, "
                                                         r"'sha256:b{12}…' now\): add --restart"):
        checkpoints.check_resumable(config, 1, replaced)

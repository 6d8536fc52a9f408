"""The work dir and the data dir go through tf.io.gfile: a job reads its photos from ram:// and
writes everything (caches, checkpoints, logs, metrics, figures, the model) to ram://, then
resumes from there. ram:// is TensorFlow's in-memory file system: it stands in for gs:// and
s3:// without a network."""
import json
import pathlib

import tensorflow as tf

from tests.conftest import TINY_IMG, make_image_folder
from training.config import TrainConfig


def _copy_to(local: pathlib.Path, remote: str) -> None:
    for path in local.rglob("*"):
        if path.is_file():
            target = f"{remote}/{path.relative_to(local).as_posix()}"
            tf.io.gfile.makedirs(target.rsplit("/", 1)[0])
            tf.io.gfile.GFile(target, "wb").write(path.read_bytes())


def test_a_job_reads_and_writes_only_through_gfile(tmp_path, capsys):
    from training.__main__ import run

    _copy_to(make_image_folder(tmp_path / "photos", per_class=10), "ram://b1-data/photos")
    config = TrainConfig(data_dir="ram://b1-data/photos", work_dir="ram://b1-work", weights="none",
                         img_size=TINY_IMG, batch_size=4, epochs=1, fine_tune_epochs=1, export=False)
    metrics = run(config)
    assert metrics["data"]["splits"]["train"]["images"] == 16 and metrics["data"]["source"] == "ram://b1-data/photos"
    for name in ("metrics.json", "model.keras", "curves.png", "samples.png", "checkpoints/fine_tuning/checkpoint",
                 "checkpoints/fine_tuning/result.json"):
        assert tf.io.gfile.exists(f"ram://b1-work/{name}"), name
    assert tf.io.gfile.glob("ram://b1-work/caches/trunk-*-train.json")
    assert tf.io.gfile.glob("ram://b1-work/logs/*")
    stored = json.loads(tf.io.gfile.GFile("ram://b1-work/metrics.json").read())
    assert len(stored["phases"]["fine_tuning"]["history"]["loss"]) == 1
    assert not (tmp_path / "ram:").exists() and not pathlib.Path("ram:").exists()

    capsys.readouterr()
    run(config)  # resumes from ram://
    out = capsys.readouterr().out
    assert "[feature_extraction] already complete in ram://b1-work" in out
    assert "[fine_tuning] already complete" in out

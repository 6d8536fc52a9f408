"""The validation gate: TF Serving's session loading path refuses what only TF2 object loading
can run, warmup is replayed by tensor names, parity is enforced, and the regression check
identifies data by content."""
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow.core.protobuf import saved_model_pb2

from model_api import signature as sig
from tests.conftest import encode, make_image_folder
from publishing import archive
from publishing import storage
from training.data import load_image_folder
from publishing.gate import Gate, GateFailed, check_accuracy, check_servable


@pytest.fixture
def staged(model_base, tmp_path):
    """A copy of a published version (conftest's tiny model) that a test may doctor."""
    copy = tmp_path / "staged"
    shutil.copytree(model_base / "pets" / "1", copy)
    return copy


def doctor(path, change) -> None:
    """Edit the MetaGraphDef TF Serving reads, leaving the TF2 object graph as it was."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    change(saved_model.meta_graphs[0])
    (path / "saved_model.pb").write_bytes(saved_model.SerializeToString())


def tf2_path_still_runs(path, image: bytes) -> None:
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures[sig.SERVING_DEFAULT](**{sig.INPUT_IMAGE_BYTES: tf.constant([image])})
    assert out[sig.OUTPUT_PROBABILITIES].shape == (1, 2)


def test_a_published_version_passes_the_session_path_gate(staged):
    report = check_servable(str(staged), Gate(test_accuracy=1.0))
    records = list(tf.data.TFRecordDataset(str(staged / sig.WARMUP_FILE)))
    assert report["warmup_requests"] == len(records) > 0
    assert "session" in report["loader"]


def test_a_savedmodel_whose_init_op_is_missing_is_refused(staged, cat_jpeg):
    def drop_init_op(meta_graph):
        meta_graph.signature_def["__saved_model_init_op"].outputs["__saved_model_init_op"].name = "no_such_init_op"

    doctor(staged, drop_init_op)
    tf2_path_still_runs(staged, cat_jpeg)
    with pytest.raises(GateFailed, match=r"'load'.*session loader.*__saved_model_init_op"):
        check_servable(str(staged), Gate(test_accuracy=1.0))


def test_a_signature_naming_a_missing_tensor_is_refused(staged, cat_jpeg):
    def rename_output(meta_graph):
        meta_graph.signature_def[sig.SERVING_DEFAULT].outputs[sig.OUTPUT_PROBABILITIES].name = "renamed:0"

    doctor(staged, rename_output)
    tf2_path_still_runs(staged, cat_jpeg)
    with pytest.raises(GateFailed, match=r"'load'.*'probabilities' names tensor 'renamed:0'"):
        check_servable(str(staged), Gate(test_accuracy=1.0))


def test_a_missing_contract_signature_is_refused(staged):
    doctor(staged, lambda meta_graph: meta_graph.signature_def.pop(sig.PREDICT_IMAGES))
    with pytest.raises(GateFailed, match=r"'signature'.*no predict_images"):
        check_servable(str(staged), Gate(test_accuracy=1.0))


def test_a_warmup_record_that_fails_in_the_session_is_refused(staged, cat_jpeg):
    (staged / sig.WARMUP_FILE).unlink()
    archive.write_warmup_file(str(staged / sig.WARMUP_FILE), "pets", [cat_jpeg, b"GARBAGE" * 4])
    with pytest.raises(GateFailed, match=r"'warmup'.*record 2 failed.*InvalidArgumentError.*not a JPEG"):
        check_servable(str(staged), Gate(test_accuracy=1.0))


def test_a_warmup_record_that_is_not_a_prediction_log_is_refused(staged):
    (staged / sig.WARMUP_FILE).unlink()
    with tf.io.TFRecordWriter(str(staged / sig.WARMUP_FILE)) as writer:
        writer.write(b"\xff not a protobuf")
    with pytest.raises(GateFailed, match=r"'warmup'.*record 1 .*not a PredictionLog"):
        check_servable(str(staged), Gate(test_accuracy=1.0))


def test_a_missing_warmup_file_is_refused(staged):
    (staged / sig.WARMUP_FILE).unlink()
    with pytest.raises(GateFailed, match=r"'warmup'.*no warmup file"):
        check_servable(str(staged), Gate(test_accuracy=1.0))


def test_parity_is_enforced_within_1e_4(staged, cat_jpeg):
    from model_api.session_bundle import SessionBundle

    bundle = SessionBundle(str(staged))
    try:
        logits = bundle.run(sig.SERVING_DEFAULT, {sig.INPUT_IMAGE_BYTES: np.array([cat_jpeg], object)})[sig.OUTPUT_LOGITS]
    finally:
        bundle.close()
    close = check_servable(str(staged), Gate(test_accuracy=1.0, warmup_images=[cat_jpeg], reference_logits=logits))
    assert close["parity_max_abs_difference"] <= 1e-6 and close["parity_images"] == 1
    with pytest.raises(GateFailed, match=r"'parity'.*differ.*by 1\.0\de-03"):
        check_servable(str(staged), Gate(test_accuracy=1.0, warmup_images=[cat_jpeg], reference_logits=logits + 1e-3))


def test_an_empty_folder_fails_to_load(tmp_path):
    (tmp_path / "staged").mkdir()
    with pytest.raises(GateFailed, match="'load'"):
        check_servable(str(tmp_path / "staged"), Gate(test_accuracy=1.0))


# --- accuracy and data identity ---------------------------------------------------------------

def test_min_accuracy_gate(tmp_path):
    with pytest.raises(GateFailed, match="below --min-accuracy"):
        check_accuracy(Gate(test_accuracy=0.5, min_accuracy=0.8), str(tmp_path))


def _identity(folder: str) -> dict:
    """The fingerprint training/data.py takes as it loads the folder: what metrics.json and the card hold."""
    return load_image_folder(folder).identity


def publish_card(model_dir, version, identity, accuracy, split=None):
    storage.write_json(str(model_dir / str(version) / sig.MODEL_CARD_FILE),
                       {"data_identity": identity, "split": split or {"seed": 1}, "test_metrics": {"accuracy": accuracy}})


def test_the_same_photos_at_another_path_are_compared(tmp_path):
    first = make_image_folder(tmp_path / "mounted-here" / "pets", per_class=3)
    second = tmp_path / "mounted-there" / "pets"
    shutil.copytree(first, second)
    identity = _identity(str(first))
    assert _identity(str(second)) == identity
    assert identity["files"] == 6 and identity["classes"] == ["cat", "dog"]
    publish_card(tmp_path / "m", 1, identity, accuracy=0.95)
    gate = Gate(test_accuracy=0.90, data_identity=_identity(str(second)), split={"seed": 1})
    with pytest.raises(GateFailed, match="0.9000 is more than 0.01 below version 1's 0.9500"):
        check_accuracy(gate, str(tmp_path / "m"))


def test_other_data_makes_the_gate_say_it_compared_nothing(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "pets", per_class=3)
    publish_card(tmp_path / "m", 1, _identity(str(folder)), accuracy=0.95)
    changed = folder / "cat" / "cat.0.jpg"
    changed.write_bytes(encode(Image.new("RGB", (9, 9)), "PNG"))
    gate = Gate(test_accuracy=0.5, data_identity=_identity(str(folder)), split={"seed": 1})
    report = check_accuracy(gate, str(tmp_path / "m"))
    assert report["regression"].startswith("compared nothing: version 1 was tested on other data (folder of 6 files")
    assert "the regression gate compared nothing" in capsys.readouterr().out


@pytest.mark.parametrize("card_identity,split,why", [
    (None, {"seed": 1}, "has no data fingerprint"),
    ({"fingerprint": "sha256:x"}, {"seed": 2}, "tested on another split"),
])
def test_a_card_that_cannot_be_compared_says_why(tmp_path, card_identity, split, why):
    publish_card(tmp_path / "m", 1, card_identity, accuracy=0.99, split=split)
    report = check_accuracy(Gate(test_accuracy=0.5, data_identity={"fingerprint": "sha256:x"}, split={"seed": 1}),
                            str(tmp_path / "m"))
    assert report["regression"].startswith("compared nothing") and why in report["regression"]

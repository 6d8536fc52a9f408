"""The exported SavedModel: its signature, parity with Keras on every image format, clear
errors on bad input, warmup records, and the versioned, gated, atomic publish."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from model_api import signature as sig
from model_api.versions import list_versions
from tests.conftest import REPO, TINY_IMG, encode, make_image_folder, tiny_classifier
from training import export, publish
from training.config import TrainConfig
from training.data import load_image_folder
from training.preprocess import decode_rgb


def fake_metrics(data, accuracy=0.9):
    return {"data": {"source": data.source, "class_names": data.class_names,
                     "splits": {n: {"images": s.count} for n, s in data.splits().items()}},
            "phases": {"fine_tuning": {"test_accuracy": accuracy, "test_loss": 0.3, "seconds": 1.0}}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One tiny classifier exported once through the real publish path."""
    root = tmp_path_factory.mktemp("export")
    folder = make_image_folder(root / "pets", per_class=10)
    data = load_image_folder(str(folder))
    clf = tiny_classifier()
    config = TrainConfig(data_dir=str(folder), img_size=TINY_IMG, weights="none", model_base_path=str(root / "models"),
                         max_pixels=5_000_000)
    result = export.export_from_training(config, clf.model, data, fake_metrics(data))
    return {"root": root, "clf": clf, "config": config, "data": data, "result": result,
            "path": result["path"], "loaded": tf.saved_model.load(result["path"])}


def serve(exported, images: list[bytes]):
    fn = exported["loaded"].signatures[sig.SERVING_DEFAULT]
    return {k: v.numpy() for k, v in fn(image_bytes=tf.constant(images)).items()}


def test_signature_has_exactly_the_contract(exported):
    from tensorflow.python.tools import saved_model_utils

    meta = saved_model_utils.get_meta_graph_def(exported["path"], "serve")
    default = meta.signature_def[sig.SERVING_DEFAULT]
    assert default.method_name == sig.PREDICT_METHOD
    assert list(default.inputs) == [sig.INPUT_IMAGE_BYTES]
    image_bytes = default.inputs[sig.INPUT_IMAGE_BYTES]
    assert image_bytes.dtype == tf.string.as_datatype_enum
    assert [d.size for d in image_bytes.tensor_shape.dim] == [-1]
    outputs = {name: (t.dtype, [d.size for d in t.tensor_shape.dim]) for name, t in default.outputs.items()}
    assert outputs == {
        sig.OUTPUT_PROBABILITIES: (tf.float32.as_datatype_enum, [-1, 2]),
        sig.OUTPUT_CLASSES: (tf.int64.as_datatype_enum, [-1]),
        sig.OUTPUT_LABELS: (tf.string.as_datatype_enum, [-1]),
        sig.OUTPUT_LOGITS: (tf.float32.as_datatype_enum, [-1, 1]),
    }
    images = meta.signature_def[sig.PREDICT_IMAGES]
    assert [d.size for d in images.inputs[sig.INPUT_IMAGES].tensor_shape.dim] == [-1, TINY_IMG, TINY_IMG, 3]
    assert images.method_name == sig.PREDICT_METHOD


def _cmyk_jpeg(image):
    return encode(image.convert("CMYK"), "JPEG", quality=95)


def _gif(image):
    second = Image.new("RGB", image.size, (0, 255, 0))
    return encode(image.convert("P"), "GIF", save_all=True, append_images=[second.convert("P")])


CASES = {
    "jpeg": lambda im: encode(im, "JPEG", quality=90),
    "png": lambda im: encode(im, "PNG"),
    "grayscale_jpeg": lambda im: encode(im.convert("L"), "JPEG"),
    "rgba_png": lambda im: encode(im.convert("RGBA"), "PNG"),
    "cmyk_jpeg": _cmyk_jpeg,
    "gif": _gif,
    "bmp": lambda im: encode(im, "BMP"),
    "1x1": lambda im: encode(im.resize((1, 1)), "PNG"),
    "3000x20": lambda im: encode(im.resize((3000, 20)), "JPEG"),
}


def _pillow_rgb(data: bytes) -> np.ndarray:
    with Image.open(__import__("io").BytesIO(data)) as image:
        image.seek(0)
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_signature_on_bytes_matches_keras_on_the_same_pixels(exported, case):
    rng = np.random.default_rng(7)
    picture = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    data = CASES[case](picture)
    pixels = decode_rgb(tf.constant(data)).numpy()
    if case in ("png", "rgba_png", "gif", "bmp", "1x1"):
        # Lossless formats: the graph's RGB is Pillow's RGB, pixel for pixel (alpha dropped, first frame).
        np.testing.assert_array_equal(pixels, _pillow_rgb(data))
    if case == "cmyk_jpeg":
        # CMYK becomes the right RGB (not inverted); JPEG decoders differ by a few levels.
        assert np.mean(np.abs(pixels.astype(int) - _pillow_rgb(data).astype(int))) < 3
    expected = export.keras_probabilities(exported["clf"].model, [pixels], TINY_IMG)
    got = serve(exported, [data])
    np.testing.assert_allclose(got[sig.OUTPUT_PROBABILITIES], expected, atol=1e-4)
    assert got[sig.OUTPUT_LABELS][0].decode() in ("cat", "dog")
    assert got[sig.OUTPUT_CLASSES][0] == np.argmax(expected[0])


def test_a_batch_of_mixed_formats_is_answered_row_by_row(exported):
    picture = Image.fromarray(np.random.default_rng(3).integers(0, 256, (30, 30, 3), dtype=np.uint8))
    batch = [CASES[c](picture) for c in ("jpeg", "png", "bmp")]
    out = serve(exported, batch)
    assert out[sig.OUTPUT_PROBABILITIES].shape == (3, 2)
    np.testing.assert_allclose(out[sig.OUTPUT_PROBABILITIES].sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("data,message", [
    (b"", "empty"),
    (b"GARBAGE" * 10, "not a JPEG, PNG, GIF or BMP"),
    ("truncated_jpeg", "JPEG"),
    ("huge", "too large"),
])
def test_bad_inputs_raise_invalid_argument_naming_the_problem(exported, data, message):
    picture = Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    if data == "truncated_jpeg":
        data = encode(picture, "JPEG")[:300]
    elif data == "huge":  # 3000 x 2000 = 6 MP, over this export's 5 MP limit
        data = encode(Image.new("RGB", (3000, 2000)), "PNG")
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serve(exported, [data])


def test_assets_labels_and_model_card(exported):
    path = exported["path"]
    assert open(os.path.join(path, sig.LABELS_FILE)).read().split() == ["cat", "dog"]
    card = json.load(open(os.path.join(path, sig.MODEL_CARD_FILE)))
    assert card["classes"] == ["cat", "dog"] and card["image_size"] == TINY_IMG and card["version"] == 1
    assert card["test_metrics"]["accuracy"] == 0.9
    for key in ("dataset", "split", "base_model", "weights", "training_seconds", "created", "code_version"):
        assert key in card


def expected_warmup_requests(exported) -> int:
    images = min(export.WARMUP_IMAGES, exported["data"].validation.count)
    return images + (1 if images > 1 else 0)  # one request per image, then one with all of them


def test_warmup_file_holds_prediction_logs_that_run_against_the_signature(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(os.path.join(exported["path"], sig.WARMUP_FILE)))
    assert len(records) == expected_warmup_requests(exported)
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.signature_name == sig.SERVING_DEFAULT
        images = tf.make_ndarray(request.inputs[sig.INPUT_IMAGE_BYTES])
        out = serve(exported, list(images))
        assert out[sig.OUTPUT_PROBABILITIES].shape[0] == len(images)


def test_gate_reports_parity_and_warmup(exported):
    gate = exported["result"]["gate"]
    assert gate["warmup_requests"] == expected_warmup_requests(exported)
    assert gate["parity_max_abs_difference"] <= 1e-4
    assert gate["regression"] == "not applicable: no published version"


# --- publishing -------------------------------------------------------------------------

def _publish(base, accuracy=0.9, version=None, write=None, force=False, keep=0, serving_config=None):
    def default_write(directory, v):
        os.makedirs(os.path.join(directory, "assets.extra"))
        with open(os.path.join(directory, sig.MODEL_CARD_FILE), "w") as f:
            json.dump({"dataset": "d", "split": {"s": 1}, "test_metrics": {"accuracy": accuracy}}, f)

    gate = publish.Gate(test_accuracy=accuracy, dataset="d", split={"s": 1}, force=force)
    original = publish.check_servable
    publish.check_servable = lambda staged, g: {}  # these tests are about the file system
    try:
        return publish.publish(str(base), "m", write or default_write, gate, version=version, keep=keep,
                               serving_config=serving_config)
    finally:
        publish.check_servable = original


def test_versions_count_up_from_the_highest_present(tmp_path):
    assert _publish(tmp_path)["version"] == 1
    (tmp_path / "m" / "7").mkdir()
    assert _publish(tmp_path)["version"] == 8
    assert list_versions(tmp_path / "m") == [1, 7, 8]


def test_export_refuses_to_overwrite_a_version(tmp_path):
    _publish(tmp_path, version=3)
    before = os.listdir(tmp_path / "m" / "3")
    with pytest.raises(publish.PublishError, match="already exists"):
        _publish(tmp_path, version=3)
    assert os.listdir(tmp_path / "m" / "3") == before


def test_a_failed_gate_leaves_the_base_path_unchanged(tmp_path):
    _publish(tmp_path, accuracy=0.95)
    before = sorted(os.listdir(tmp_path / "m"))
    with pytest.raises(publish.GateFailed, match="accuracy.*0.9000.*below version 1's 0.9500"):
        _publish(tmp_path, accuracy=0.90)
    assert sorted(os.listdir(tmp_path / "m")) == before
    assert _publish(tmp_path, accuracy=0.90, force=True)["gate"]["forced"]


def test_min_accuracy_gate(tmp_path):
    gate = publish.Gate(test_accuracy=0.5, min_accuracy=0.8)
    with pytest.raises(publish.GateFailed, match="below --min-accuracy"):
        publish.check_accuracy(gate, str(tmp_path))


def test_a_broken_savedmodel_fails_the_servable_check(tmp_path):
    (tmp_path / "staged").mkdir()
    with pytest.raises(publish.GateFailed, match="'load'"):
        publish.check_servable(str(tmp_path / "staged"), publish.Gate(test_accuracy=1.0))


def test_keep_prunes_old_versions_but_never_a_labelled_one(tmp_path):
    for _ in range(4):
        _publish(tmp_path)
    config = tmp_path / "models.config"
    config.write_text(textwrap.dedent("""
        model_config_list { config { name: "m" base_path: "/models/m" model_platform: "tensorflow"
          version_labels { key: "stable" value: 1 } } }"""))
    result = _publish(tmp_path, keep=2, serving_config=str(config))
    assert result["removed_versions"] == [2, 3]
    assert list_versions(tmp_path / "m") == [1, 4, 5]


def test_a_process_killed_during_export_leaves_no_version_behind(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from training import publish
        def write(directory, version):
            os.makedirs(directory)
            open(os.path.join(directory, "saved_model.pb"), "wb").write(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)  # dies half-way through writing
        publish.publish({str(tmp_path)!r}, "m", write, publish.Gate(test_accuracy=1.0))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -9
    leftovers = os.listdir(tmp_path / "m")
    assert list_versions(tmp_path / "m") == [] and len(leftovers) == 1 and leftovers[0].startswith(".staging-")
    assert _publish(tmp_path)["version"] == 1
    assert os.listdir(tmp_path / "m") == ["1"], "the next export removes the stale staging folder"

"""The exported SavedModel: its signature, parity with Keras on every image format, clear
errors on bad input, warmup records, test-time augmentation, and export on ram://.
Publishing, the gate and the lock have their own tests (tests/publishing/)."""
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from model_api import decision
from model_api import signature as sig
from model_api.versions import list_versions
from tests.conftest import TINY_IMG, encode, make_image_folder, tiny_classifier
from training import export
from publishing import archive, storage
from training.config import TrainConfig
from training.data import load_image_folder
from model_api.preprocess import decode_rgb, format_example


def fake_metrics(data, accuracy=0.9, flip_accuracy=0.93):
    """A run's metrics.json: its last phase's (Keras) accuracy and the accuracy as served with each --tta."""
    return {"data": {"source": data.source, "class_names": data.class_names, "identity": data.identity,
                     "splits": {n: {"images": s.count} for n, s in data.splits().items()}},
            "phases": {"fine_tuning": {"test_accuracy": accuracy, "test_loss": 0.3, "seconds": 1.0}},
            "accuracy_by_tta": {"test": {"none": accuracy, "flip": flip_accuracy}}}


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
    expected = decision.probabilities_from_logits(archive.keras_logits(exported["clf"].model, [pixels], TINY_IMG))
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
    assert card["data_identity"] == exported["data"].identity and card["data_identity"]["fingerprint"]
    for key in ("dataset", "split", "base_model", "weights", "training_seconds", "created", "code_version"):
        assert key in card


def expected_warmup_requests(exported) -> int:
    return min(export.WARMUP_IMAGES, exported["data"].validation.count)  # one single-image request per image


def test_warmup_file_holds_prediction_logs_that_run_against_the_signature(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(os.path.join(exported["path"], sig.WARMUP_FILE)))
    assert len(records) == expected_warmup_requests(exported)
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.signature_name == sig.SERVING_DEFAULT
        images = tf.make_ndarray(request.inputs[sig.INPUT_IMAGE_BYTES])
        assert images.shape == (1,), "single-image requests fit a batching server of any max_batch_size"
        out = serve(exported, list(images))
        assert out[sig.OUTPUT_PROBABILITIES].shape[0] == 1


def test_gate_reports_parity_and_warmup(exported):
    gate = exported["result"]["gate"]
    assert gate["warmup_requests"] == expected_warmup_requests(exported)
    assert gate["parity_max_abs_difference"] <= 1e-4
    assert gate["regression"] == "not applicable: no published version"


# --- test-time augmentation ----------------------------------------------------------------

@pytest.fixture(scope="module")
def exported_tta(exported):
    """The same classifier exported with --tta flip, as version 2 of the same model."""
    config = dataclasses.replace(exported["config"], tta="flip")
    result = export.export_from_training(config, exported["clf"].model, exported["data"], fake_metrics(exported["data"]))
    return {**exported, "config": config, "result": result, "path": result["path"],
            "loaded": tf.saved_model.load(result["path"])}


def _picture(seed=11, size=(40, 56)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


def test_tta_flip_serves_the_mean_logits_of_the_image_and_its_mirror(exported, exported_tta):
    data = encode(_picture(), "PNG")
    pixels = decode_rgb(tf.constant(data)).numpy()
    model = exported["clf"].model
    batch = np.stack([format_example(p, TINY_IMG).numpy() for p in (pixels, pixels[:, ::-1])])
    plain, mirrored = np.asarray(model(batch, training=False), dtype=np.float64)
    got = serve(exported_tta, [data])
    np.testing.assert_allclose(got[sig.OUTPUT_LOGITS][0], (plain + mirrored) / 2, atol=1e-4)
    np.testing.assert_allclose(got[sig.OUTPUT_PROBABILITIES],
                               decision.probabilities_from_logits(archive.keras_logits(model, [pixels], TINY_IMG, "flip")),
                               atol=1e-4)
    assert abs(plain - mirrored).max() > 1e-3, "the picture must not be symmetric for this test to mean anything"
    np.testing.assert_allclose(serve(exported, [data])[sig.OUTPUT_LOGITS][0], plain, atol=1e-4)


def test_tta_flip_gives_a_picture_and_its_mirror_the_same_answer(exported, exported_tta):
    picture = _picture(seed=12)
    pair = [encode(picture, "PNG"), encode(picture.transpose(Image.FLIP_LEFT_RIGHT), "PNG")]
    plain = serve(exported, pair)[sig.OUTPUT_LOGITS]
    assert abs(plain[0] - plain[1]).max() > 1e-3, "without TTA the mirror gets another answer"
    got = serve(exported_tta, pair)[sig.OUTPUT_LOGITS]
    np.testing.assert_allclose(got[0], got[1], atol=1e-4)  # float sums in another order


def test_tta_is_recorded_and_checked_by_the_gate(exported, exported_tta):
    card = json.load(open(os.path.join(exported_tta["path"], sig.MODEL_CARD_FILE)))
    assert card["tta"] == "flip"
    assert exported_tta["result"]["gate"]["test_accuracy"] == 0.93
    assert json.load(open(os.path.join(exported["path"], sig.MODEL_CARD_FILE)))["tta"] == "none"
    assert exported_tta["result"]["gate"]["parity_max_abs_difference"] <= 1e-4


# --- ram:// -------------------------------------------------------------------------------

LOCAL_CALLS = [(os, name) for name in ("open", "makedirs", "mkdir", "rename", "replace", "listdir", "scandir",
                                       "stat", "remove", "rmdir", "walk")]


def test_export_and_publish_on_ram_use_no_os_call(exported, tmp_path, monkeypatch):
    """Everything export/publish touches goes through tf.io.gfile: TF's in-memory ram://
    filesystem works, nothing lands on the local disk, and no os call sees a ram:// path."""
    import builtins
    import shutil

    from model_api.session_bundle import SessionBundle

    def guard(module, name):
        original = getattr(module, name)

        def checked(*args, **kwargs):
            first = args[0] if args else None
            if isinstance(first, (str, bytes, os.PathLike)) and "ram:" in str(os.fspath(first)):
                raise AssertionError(f"{module.__name__}.{name} called on {first}")
            return original(*args, **kwargs)
        monkeypatch.setattr(module, name, checked)

    for module, name in LOCAL_CALLS + [(builtins, "open"), (shutil, "rmtree"), (shutil, "copytree")]:
        guard(module, name)
    monkeypatch.chdir(tmp_path)
    base = f"ram://export-{os.getpid()}/models"
    config = dataclasses.replace(exported["config"], model_base_path=base, tta="flip")
    result = export.export_from_training(config, exported["clf"].model, exported["data"], fake_metrics(exported["data"]))
    monkeypatch.undo()
    assert result["path"] == f"{base}/pets/1" and list_versions(f"{base}/pets") == [1]
    assert result["gate"]["parity_max_abs_difference"] <= 1e-4 and result["gate"]["warmup_requests"] > 0
    card = json.loads(tf.io.gfile.GFile(f"{base}/pets/1/{sig.MODEL_CARD_FILE}").read())
    assert card["version"] == 1 and card["tta"] == "flip"
    assert tf.io.gfile.GFile(f"{base}/pets/1/{sig.LABELS_FILE}").read().split() == ["cat", "dog"]
    bundle = SessionBundle(f"{base}/pets/1")
    try:
        out = bundle.run(sig.SERVING_DEFAULT, {sig.INPUT_IMAGE_BYTES: np.array([encode(_picture(), "PNG")], object)})
        assert out[sig.OUTPUT_PROBABILITIES].shape == (1, 2)
    finally:
        bundle.close()
    assert os.listdir(tmp_path) == [], "nothing was written to the local disk"
    storage.remove_tree(f"ram://export-{os.getpid()}")


def test_a_tta_flip_card_states_the_accuracy_as_served_with_the_mirror(exported_tta):
    """metrics.json's accuracy_by_tta["test"]["flip"] (0.93), not the Keras model's last phase (0.9)."""
    card = json.load(open(os.path.join(exported_tta["path"], sig.MODEL_CARD_FILE)))
    print(json.dumps({key: card[key] for key in ("tta", "test_metrics", "split")}))
    assert card["test_metrics"]["accuracy"] == 0.93


def test_export_model_refuses_a_test_split_the_run_was_not_tested_on(tmp_path, capsys):
    work = tmp_path / "w"
    work.mkdir()
    (work / "model.keras").write_bytes(b"never read: the refusal comes first")
    trained = TrainConfig(img_size=TINY_IMG)
    (work / "metrics.json").write_text(json.dumps({"config": trained.to_dict(), "data": {}}))
    code = export.main(["--work-dir", str(work), "--img-size", str(TINY_IMG), "--test-split", "train[95%:]",
                        "--model-base-path", str(tmp_path / "models")])
    err = capsys.readouterr().err.strip()
    print(err)
    assert code == 2 and err.count("\n") == 0
    assert err.startswith("error: --test-split train[95%:] (trained: train[90%:]) differ from the trained run's")
    assert not (tmp_path / "models").exists()


def test_export_model_refuses_data_changed_since_it_was_tested(exported, tmp_path, capsys):
    """The folder's fingerprint as loaded now against metrics.json's: a photo replaced in place, same count."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "model.keras").write_bytes(b"never read: the refusal comes first")
    config = exported["config"]
    metrics = {**fake_metrics(exported["data"]), "config": config.to_dict()}
    metrics["data"]["identity"] = {**exported["data"].identity, "fingerprint": "sha256:" + "0" * 64}
    (work / "metrics.json").write_text(json.dumps(metrics))
    code = export.main(["--work-dir", str(work), "--data-dir", config.data_dir, "--img-size", str(TINY_IMG),
                        "--weights", "none", "--model-base-path", str(tmp_path / "models")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "content changed since it was tested" in err and err.count("\n") == 0
    assert not (tmp_path / "models").exists()

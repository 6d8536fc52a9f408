"""Export: a versioned SavedModel that takes raw image bytes, validated, then published.

The `serving_default` signature (method tensorflow/serving/predict) takes `image_bytes`
(DT_STRING [-1], one encoded JPEG/PNG/GIF/BMP per element) and runs the training job's own
preprocessing (model_api/preprocess.py) inside the graph, so clients send files as they are.
`predict_images` takes already-preprocessed float32 [-1, H, W, 3] images in [-1, 1].
With `--tta flip` both signatures return the mean of the logits of each image and of its
horizontal mirror (probabilities, classes and labels follow from those logits).

Standalone: `python -m training.export --work-dir WORK [same flags as train-job]` exports
WORK/model.keras using WORK/metrics.json for the classes and test metrics.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from model_api import signature as sig
from model_api.versions import join
from model_api import decision
from publishing import storage
from training import gate, publish
from training.config import ConfigError, TrainConfig, check_matches_training, split_description
from model_api.preprocess import bytes_batch_to_input, decode_rgb, format_example

WARMUP_IMAGES = 8


def build_archive(model: keras.Model, class_names: list[str], img_size: int,
                  max_pixels: int = sig.DEFAULT_MAX_PIXELS, tta: str = "none") -> keras.export.ExportArchive:
    """The servable: both signatures over the Keras model, returning the four outputs."""
    labels = tf.constant(class_names, dtype=tf.string)

    def outputs_for(images):
        logits = decision.served_logits(model, images, tta)
        classes = decision.classes_from_logits(logits)
        return {sig.OUTPUT_PROBABILITIES: decision.probabilities_from_logits_tf(logits),
                sig.OUTPUT_CLASSES: classes, sig.OUTPUT_LABELS: tf.gather(labels, classes),
                sig.OUTPUT_LOGITS: logits}

    def serve_image_bytes(image_bytes):
        return outputs_for(bytes_batch_to_input(image_bytes, img_size, max_pixels))

    def serve_images(images):
        return outputs_for(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(sig.SERVING_DEFAULT, serve_image_bytes,
                         input_signature=[tf.TensorSpec([None], tf.string, name=sig.INPUT_IMAGE_BYTES)])
    archive.add_endpoint(sig.PREDICT_IMAGES, serve_images,
                         input_signature=[tf.TensorSpec([None, img_size, img_size, 3], tf.float32,
                                                        name=sig.INPUT_IMAGES)])
    return archive


def keras_logits(model: keras.Model, images_uint8: list[np.ndarray], img_size: int, tta: str = "none") -> np.ndarray:
    """The reference: the Keras model on the training pipeline's preprocessing, eagerly, with
    the test-time augmentation computed in numpy (independently of the graph's)."""
    batch = np.stack([format_example(image, img_size).numpy() for image in images_uint8])
    logits = np.asarray(model(batch, training=False), dtype=np.float64)
    if tta == "flip":
        logits = (logits + np.asarray(model(batch[:, :, ::-1, :].copy(), training=False), dtype=np.float64)) / 2
    return logits


def warmup_images(data, count: int = WARMUP_IMAGES) -> list[bytes]:
    """Real validation images (test images if there are none), encoded as JPEG."""
    split = data.validation if data.validation.count else data.test
    return [tf.io.encode_jpeg(image, quality=95).numpy() for image, _ in split.images.take(count)]


def write_warmup_file(path: str, model_name: str, images: list[bytes]) -> int:
    """TF Serving's SavedModel warmup format: a TFRecord of PredictionLog records
    (https://www.tensorflow.org/tfx/serving/saved_model_warmup), one single-image request per image.

    Single-image requests only: TF Serving replays warmup through the batching session when
    --enable_batching is on (saved_model_bundle_source_adapter.cc runs RunSavedModelWarmup after
    saved_model_bundle_factory.cc wrapped the session), so a record larger than the server's
    max_batch_size fails the load ("Task size N is larger than maximum input batch size M"), and
    the server's batching parameters are unknown here. One image fits every max_batch_size >= 1."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for image in images:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=sig.SERVING_DEFAULT))
            request.inputs[sig.INPUT_IMAGE_BYTES].CopyFrom(tf.make_tensor_proto([image], dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return len(images)


def code_version() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "-C", here, "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib import metadata

    try:
        return metadata.version("transfer-serve")
    except metadata.PackageNotFoundError:
        return "unknown"


def model_card(config: TrainConfig, metrics: dict, version: int) -> dict:
    """What the version is: its data and split as tested (metrics.json), its accuracy as served (with --tta)."""
    phases = metrics.get("phases", {})
    final = list(phases.values())[-1] if phases else {}
    return {
        "model_name": config.resolved_model_name,
        "version": version,
        "dataset": metrics["data"]["source"],
        "data_identity": metrics["data"]["identity"],
        "split": split_description(config),
        "classes": metrics["data"]["class_names"],
        "image_size": config.img_size,
        "base_model": "MobileNetV2(alpha=1.0, include_top=False)",
        "weights": config.weights,
        "fine_tune_at": config.fine_tune_at,
        "test_metrics": {"accuracy": decision.served_accuracy(metrics, config.tta), "loss": final.get("test_loss"),
                         "per_phase": {name: p.get("test_accuracy") for name, p in phases.items()}},
        "training_seconds": sum(p.get("seconds", 0.0) for p in phases.values()),
        "images": {name: s["images"] for name, s in metrics["data"]["splits"].items()},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "signature": {"name": sig.SERVING_DEFAULT, "input": sig.INPUT_IMAGE_BYTES, "outputs": list(sig.OUTPUT_KEYS),
                      "max_pixels": config.max_pixels},
        "tta": config.tta,  # test-time augmentation inside the signature: "none" or "flip"
    }


def write_servable(model: keras.Model, class_names: list[str], config: TrainConfig, card: dict,
                   warmup: list[bytes], directory: str) -> None:
    """Everything a version directory holds, written into `directory` (a staging folder)."""
    build_archive(model, class_names, config.img_size, config.max_pixels, config.tta).write_out(directory,
                                                                                                verbose=False)
    storage.write_text(join(directory, sig.LABELS_FILE), "\n".join(class_names) + "\n")
    storage.write_json(join(directory, sig.MODEL_CARD_FILE), card)
    write_warmup_file(join(directory, sig.WARMUP_FILE), config.resolved_model_name, warmup)


def check_serving_config(config: TrainConfig) -> None:
    """Read --serving-config before training or exporting: a bad file is a ConfigError, not a late
    failure after a version was published (a retried Job would publish another each time)."""
    try:
        publish.protected_versions(config.serving_config, config.resolved_model_name)
    except publish.PublishError as err:
        raise ConfigError(str(err)) from None


def export_from_training(config: TrainConfig, model: keras.Model, data, metrics: dict) -> dict:
    """Stage, validate and publish; raises publish.GateFailed (nothing published) on failure."""
    images = warmup_images(data)
    reference = keras_logits(model, [decode_rgb(b).numpy() for b in images], config.img_size, config.tta)
    def write(directory: str, version: int) -> None:
        write_servable(model, metrics["data"]["class_names"], config,
                       model_card(config, metrics, version), images, directory)

    return publish.publish(
        base_path=config.model_base_path, model_name=config.resolved_model_name, write=write,
        gate=gate.for_run(config, metrics, warmup_images=images, reference_logits=reference),
        version=config.version or None, keep=config.keep, serving_config=config.serving_config)


def main(argv=None) -> int:
    """Export WORK/model.keras alone, with the training job's flags."""
    from training import data as data_lib
    from training.config import CONFIG_ERROR_EXIT, from_env_and_args

    try:
        config = from_env_and_args(argv)
        check_serving_config(config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    model_path = join(config.work_dir, "model.keras")
    metrics_path = join(config.work_dir, "metrics.json")
    for path in (model_path, metrics_path):
        if not tf.io.gfile.exists(path):
            print(f"error: {path} not found: run train-job with this --work-dir first", file=sys.stderr)
            return 2
    import training.model  # noqa: F401  registers InferenceModeModel for loading

    metrics = storage.read_json(metrics_path)
    try:
        check_matches_training(config, metrics, metrics_path)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    try:
        data = data_lib.load(config)
    except data_lib.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        check_matches_training(config, metrics, metrics_path, data.identity)  # the data as tested, by content
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    try:
        result = export_from_training(config, keras.models.load_model(model_path), data, metrics)
    except (publish.GateFailed, publish.PublishError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

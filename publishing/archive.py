"""What a version directory holds: the SavedModel whose signature takes image bytes, its labels, model
card and TF Serving warmup records, built from a Keras model (the contract: model_api/; docs/export.md)."""
from __future__ import annotations

import datetime
import os
import subprocess
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from model_api import decision
from model_api import signature as sig
from model_api.preprocess import bytes_batch_to_input, decode_rgb, format_example
from model_api.versions import join
from publishing import storage
from publishing.gate import Gate


def build_archive(model: keras.Model, class_names: list[str], img_size: int,
                  max_pixels: int = sig.DEFAULT_MAX_PIXELS, tta: str = "none") -> keras.export.ExportArchive:
    """The servable: both signatures over the Keras model, returning the four outputs (with --tta flip,
    of the mean logits of each image and its mirror: decision.served_logits)."""
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
    """The gate's reference: the Keras model on the training pipeline's preprocessing, eagerly, with
    the test-time augmentation computed in numpy (independently of the graph's)."""
    batch = np.stack([format_example(image, img_size).numpy() for image in images_uint8])
    logits = np.asarray(model(batch, training=False), dtype=np.float64)
    if tta == "flip":
        logits = (logits + np.asarray(model(batch[:, :, ::-1, :].copy(), training=False), dtype=np.float64)) / 2
    return logits


def write_warmup_file(path: str, model_name: str, images: list[bytes]) -> int:
    """TF Serving's SavedModel warmup format (https://www.tensorflow.org/tfx/serving/saved_model_warmup):
    a TFRecord of PredictionLogs, one single-image request per image, so that it fits a batching
    server of any max_batch_size (why: docs/export.md)."""
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
    """`git describe` of this checkout, else the installed package's version."""
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


@dataclass
class Servable:
    """A Keras classifier as one version will serve it; `warmup`: encoded images, the warmup records
    and the gate's parity check."""
    model: keras.Model
    class_names: list[str]
    model_name: str
    img_size: int
    max_pixels: int = sig.DEFAULT_MAX_PIXELS
    tta: str = "none"
    warmup: list[bytes] = field(default_factory=list)

    def reference_logits(self) -> np.ndarray:
        return keras_logits(self.model, [decode_rgb(b).numpy() for b in self.warmup], self.img_size, self.tta)

    def card(self, about: dict, gate: Gate) -> dict:
        """The model card: `about` (what the trainer states), the gate's test accuracy, data and split (what
        the regression gate compares the next version with: gate.newest_card) and the servable's contract."""
        return {**about, "data_identity": gate.data_identity, "split": gate.split,
                "test_metrics": {**about.get("test_metrics", {}), "accuracy": gate.test_accuracy},
                "image_size": self.img_size, "tta": self.tta,  # the TTA inside the signature
                "signature": {"name": sig.SERVING_DEFAULT, "input": sig.INPUT_IMAGE_BYTES,
                              "outputs": list(sig.OUTPUT_KEYS), "max_pixels": self.max_pixels},
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "code_version": code_version()}

    def write(self, directory: str, about: dict, gate: Gate) -> None:
        """Everything a version directory holds, written into `directory` (a staging folder)."""
        build_archive(self.model, self.class_names, self.img_size, self.max_pixels, self.tta).write_out(
            directory, verbose=False)
        storage.write_text(join(directory, sig.LABELS_FILE), "\n".join(self.class_names) + "\n")
        storage.write_json(join(directory, sig.MODEL_CARD_FILE), self.card(about, gate))
        write_warmup_file(join(directory, sig.WARMUP_FILE), self.model_name, self.warmup)

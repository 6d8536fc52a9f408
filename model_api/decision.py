"""The one definition of the classifier's outputs: head size, loss, accuracy and decision rule.

Two classes use the tutorial's single logit (Dense(1), BinaryCrossentropy from logits,
class 1 iff logit > 0, p(class 1) = sigmoid(logit)); N classes use N logits with the sparse
categorical loss, argmax and softmax. With `--tta flip` the served logits are the mean of the
image's and its horizontal mirror's. Training (Keras fit and the multi-worker loop), the
exported signature, the report, the model card and the gate all import these, so they cannot disagree.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def head_units(num_classes: int) -> int:
    """Logits per image: one for two classes (the tutorial's Dense(1)), else one per class."""
    return 1 if num_classes == 2 else num_classes


def per_example_loss(num_classes: int, reduction="sum_over_batch_size", label_smoothing: float = 0.0
                     ) -> keras.losses.Loss:
    """Cross-entropy on logits; `reduction=None` gives one value per example.

    `label_smoothing` s trains towards 1 - s/2 and s/2 for two classes (Keras' binary rule), or
    1 - s + s/N and s/N for N classes (Keras' categorical rule, on one-hot labels).
    """
    if num_classes == 2:
        return keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=label_smoothing, reduction=reduction)
    if label_smoothing:
        return SmoothedSparseCrossentropy(num_classes, label_smoothing, reduction=reduction)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)


@keras.saving.register_keras_serializable(package="transfer")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Integer labels -> Keras' CategoricalCrossentropy with label smoothing (the sparse one has none)."""

    def __init__(self, num_classes: int, label_smoothing: float, reduction="sum_over_batch_size",
                 name="smoothed_sparse_crossentropy", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        one_hot = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), self.num_classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(one_hot, y_pred, from_logits=True,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "label_smoothing": self.label_smoothing}


def accuracy_metric(num_classes: int) -> keras.metrics.Metric:
    if num_classes == 2:
        return keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")  # logit > 0
    return keras.metrics.SparseCategoricalAccuracy(name="accuracy")


def classes_from_logits(logits: tf.Tensor) -> tf.Tensor:
    """int64 [N]: class 1 iff the single logit > 0, else the argmax. Works in graphs."""
    logits = tf.convert_to_tensor(logits)
    if logits.shape[-1] == 1:
        return tf.cast(logits[:, 0] > 0, tf.int64)
    return tf.argmax(logits, axis=-1, output_type=tf.int64)


def probabilities_from_logits_tf(logits: tf.Tensor) -> tf.Tensor:
    """[N, 1] -> [N, 2] as [1 - sigmoid, sigmoid]; [N, C] -> softmax. Works in graphs."""
    logits = tf.convert_to_tensor(logits)
    if logits.shape[-1] == 1:
        p = tf.sigmoid(logits[:, 0])
        return tf.stack([1.0 - p, p], axis=1)
    return tf.nn.softmax(logits, axis=-1)


def probabilities_from_logits(logits) -> np.ndarray:
    """The same rule in float64 numpy, for reports and reference comparisons."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[-1] == 1:
        p = 1 / (1 + np.exp(-logits[:, 0]))
        return np.stack([1 - p, p], axis=1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- test-time augmentation: what the signature serves -------------------------------------------------

def mirror(images: tf.Tensor) -> tf.Tensor:
    """The horizontal mirror of an image [H, W, C] or a batch [N, H, W, C] (the width is axis -2); the
    tutorial's RandomFlip("horizontal") and the --views flip."""
    return tf.reverse(images, axis=[-2])


def combine_tta(logits: tf.Tensor, mirrored_logits: tf.Tensor | None, tta: str) -> tf.Tensor:
    """The served logits from those of the images and (for tta="flip") of their mirrors."""
    if tta == "flip":
        return (logits + mirrored_logits) / 2.0
    return logits


def served_logits(model, images: tf.Tensor, tta: str = "none") -> tf.Tensor:
    """float32 logits of preprocessed images as the signature serves them: with tta="flip" the model runs
    once, on the images and their mirrors as one batch, and each image's two logits are averaged."""
    if tta != "flip":
        return tf.cast(model(images, training=False), tf.float32)
    both = tf.cast(model(tf.concat([images, mirror(images)], axis=0), training=False), tf.float32)
    logits, mirrored = tf.split(both, 2, axis=0)
    return combine_tta(logits, mirrored, tta)


def served_accuracy(metrics: dict, tta: str, split: str = "test") -> float | None:
    """The accuracy of the model as served with `tta` on `split`, from a run's metrics.json (its
    accuracy_by_tta, training/report.py): what the model card states and the gate checks. A run without
    accuracy_by_tta gives its last phase's accuracy for tta "none" (the Keras model is what is served)
    and None otherwise (not measured)."""
    by_tta = (metrics.get("accuracy_by_tta") or {}).get(split)
    if by_tta is not None:
        return by_tta.get(tta)
    phases = list((metrics.get("phases") or {}).values())
    return phases[-1].get(f"{split}_accuracy") if tta == "none" and phases else None

"""The network and its named parts (images -> base -> pool -> [dropout] -> head -> logits; the cut, trunk
and top for caching), and each phase's freezing, the base kept in inference mode (docs/training.md)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import keras
import tensorflow as tf

from model_api import decision


class WeightsUnavailable(RuntimeError):
    """The requested pretrained weights cannot be loaded (offline, missing or wrong file)."""


@keras.saving.register_keras_serializable(package="transfer")
class InferenceModeModel(keras.Model):
    """A functional Keras model whose every call runs its layers in inference mode, for the part whose
    BatchNormalization statistics must stay fixed (the base; the trunk and top cut from it): Keras 3
    overrides an inner `training=False` with fit's `training=True` (keras-team/keras#20285).

    It overrides `call` only: Keras' own train_step (loss scaling under mixed precision, the loss
    reduction under tf.distribute, metrics) is untouched, and its variables train as any others.
    """

    def call(self, inputs, training=None, mask=None, **kwargs):
        return super().call(inputs, training=False, mask=mask, **kwargs)


def in_inference_mode(model: keras.Model, name: str | None = None) -> InferenceModeModel:
    """The same layers (and so the same weights) as `model`, always run in inference mode."""
    return InferenceModeModel(model.input, model.output, name=name or model.name)


@dataclass
class Classifier:
    """The full model and the named parts each phase trains."""

    model: keras.Model        # images [-1, 1] -> logits
    base: keras.Model         # MobileNetV2 without top (the full model runs its layers in inference mode)
    pool: keras.layers.Layer  # GlobalAveragePooling2D
    head: keras.layers.Layer  # Dense(1) for 2 classes, Dense(N) otherwise
    num_classes: int
    dropout: keras.layers.Layer | None = None  # keras.layers.Dropout before the head, or none

    def logits(self, features):
        """features -> (dropout) -> head: the part above the pool, in every model that trains the head."""
        return self.head(features if self.dropout is None else self.dropout(features))


def resolve_weights(spec: str) -> str | None:
    """'imagenet' | 'none' | a path -> what keras.applications accepts, or a clear error."""
    if spec.lower() == "none":
        return None
    if spec.lower() == "imagenet":
        return "imagenet"
    if not os.path.isfile(spec):
        raise WeightsUnavailable(f"weights file not found: {spec}")
    return spec


def build_base(img_size: int, weights: str) -> keras.Model:
    resolved = resolve_weights(weights)
    try:
        return keras.applications.MobileNetV2(
            input_shape=(img_size, img_size, 3), include_top=False, weights=resolved)
    except Exception as err:  # Keras raises plain Exception for download failures
        if resolved == "imagenet":
            raise WeightsUnavailable(
                "could not download the ImageNet weights for MobileNetV2 (is this machine offline?); "
                f"pass --weights PATH to a Keras .weights.h5 file instead ({_first_line(err)})") from err
        if resolved is not None:
            raise WeightsUnavailable(
                f"could not load weights from {resolved}: {_first_line(err)} "
                "(expected MobileNetV2(alpha=1.0, include_top=False) Keras weights)") from err
        raise


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def build_classifier(num_classes: int, img_size: int, weights: str, dropout: float = 0.0,
                     seed: int | None = None) -> Classifier:
    if num_classes < 2:
        raise ValueError("a classifier needs at least 2 classes")
    base = build_base(img_size, weights)
    base.trainable = False
    pool = keras.layers.GlobalAveragePooling2D(name="global_average_pooling")
    # The head stays float32 under mixed precision so logits and losses are exact enough.
    head = keras.layers.Dense(decision.head_units(num_classes), name="logits", dtype="float32")
    classifier = Classifier(model=None, base=base, pool=pool, head=head, num_classes=num_classes,
                            dropout=keras.layers.Dropout(dropout, seed=seed, name="dropout") if dropout else None)
    inputs = keras.Input((img_size, img_size, 3), name="images")
    # The base's layers, called in inference mode whatever the training flag: their BN statistics stay ImageNet's.
    outputs = classifier.logits(pool(in_inference_mode(base)(inputs)))
    classifier.model = keras.Model(inputs, outputs, name="transfer_mobilenet_v2")
    return classifier


def compile_for(model: keras.Model, num_classes: int, learning_rate: float, weight_decay: float = 0.0,
                label_smoothing: float = 0.0) -> None:
    """RMSprop at `learning_rate` with the one loss and accuracy of model_api/decision.py.

    The tutorial's RMSprop has neither weight decay nor label smoothing (both 0 by default)."""
    optimizer = keras.optimizers.RMSprop(learning_rate=learning_rate, weight_decay=weight_decay or None)
    model.compile(optimizer=optimizer, loss=decision.per_example_loss(num_classes, label_smoothing=label_smoothing),
                  metrics=[decision.accuracy_metric(num_classes)])


def freeze_for_feature_extraction(classifier: Classifier) -> None:
    """Phase 1: the whole base frozen; only the head trains."""
    classifier.base.trainable = False


def unfreeze_from(classifier: Classifier, fine_tune_at: int) -> None:
    """Phase 2: the base trainable from layer `fine_tune_at` up, as in the tutorial."""
    classifier.base.trainable = True
    for layer in classifier.base.layers[:fine_tune_at]:
        layer.trainable = False


def trainable_parameter_count(model: keras.Model) -> int:
    return int(sum(int(tf.size(w)) for w in model.trainable_weights))


def cut_layer_index(base: keras.Model, fine_tune_at: int) -> int:
    """The deepest layer below `fine_tune_at` whose output alone feeds everything above it.

    Everything up to that layer is frozen and in inference mode, so its output per image
    never changes during phase 2 and can be computed once. For MobileNetV2 and
    fine_tune_at=100 this is block_10_project_BN (10x10x96 at 160 px): layer 100 sits inside
    block 11, whose residual add also needs the block's input. Returns 0 (the input layer)
    when no useful cut exists.
    """
    index = {id(layer): i for i, layer in enumerate(base.layers)}
    earliest_input = []  # for each layer, the smallest index among its inbound layers
    for layer in base.layers:
        inbound = []
        for node in layer._inbound_nodes:
            sources = [index.get(id(source)) for source in _inbound_layers(node)]
            if None not in sources:  # skip calls from other graphs (e.g. the cached top's Input)
                inbound.extend(sources)
        earliest_input.append(min(inbound) if inbound else len(base.layers))
    for cut in range(min(fine_tune_at, len(base.layers)) - 1, 0, -1):
        if all(earliest_input[j] >= cut for j in range(cut + 1, len(base.layers))):
            return cut
    return 0


def _inbound_layers(node):
    layers = []
    for tensor in node.arguments.keras_tensors:
        layers.append(tensor._keras_history.operation)
    return layers


def split_at(base: keras.Model, cut: int) -> tuple[keras.Model, keras.Model]:
    """(trunk, top) at layer `cut`: trunk maps images to that layer's output, top maps it to
    the base's output. Both share the base's layers (and so its weights) and, as the base,
    always run in inference mode (the top trains in phase 2 with its BN statistics fixed)."""
    cut_output = base.layers[cut].output
    trunk = InferenceModeModel(base.input, cut_output, name="trunk")
    top = InferenceModeModel(cut_output, base.output, name="top")
    return trunk, top

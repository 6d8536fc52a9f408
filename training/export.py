"""The export-model job: reads a trained run (WORK/model.keras, metrics.json), checks that the flags and
data match what was trained and tested, and publishes it through publishing/ (docs/export.md)."""
from __future__ import annotations

import json
import sys

import keras
import tensorflow as tf

from model_api.decision import served_accuracy
from model_api.versions import join
from publishing import publish, storage
from publishing.archive import Servable
from publishing.gate import Gate, GateFailed
from training.config import ConfigError, TrainConfig, check_matches_training, split_description

WARMUP_IMAGES = 8


def warmup_images(data, count: int = WARMUP_IMAGES) -> list[bytes]:
    """Real validation images (test images if there are none), encoded as JPEG."""
    split = data.validation if data.validation.count else data.test
    return [tf.io.encode_jpeg(image, quality=95).numpy() for image, _ in split.images.take(count)]


def for_run(config: TrainConfig, metrics: dict, **servable) -> Gate:
    """The gate of a trained run: its test accuracy as served with config.tta, on the data it was
    tested on (metrics.json's data.identity) and its split; `servable`: warmup_images, reference_logits."""
    return Gate(test_accuracy=served_accuracy(metrics, config.tta), min_accuracy=config.min_accuracy,
                max_regression=config.max_regression, force=config.force,
                data_identity=(metrics.get("data") or {}).get("identity") or {}, split=split_description(config),
                **servable)


def about_run(config: TrainConfig, metrics: dict, version: int) -> dict:
    """What the model card states of the trained run (the gate's figures and the servable's are added by
    publishing/archive.py); test_metrics.per_phase are the phases' own Keras accuracies."""
    phases = metrics.get("phases", {})
    final = list(phases.values())[-1] if phases else {}
    return {"model_name": config.resolved_model_name, "version": version, "dataset": metrics["data"]["source"],
            "classes": metrics["data"]["class_names"], "base_model": "MobileNetV2(alpha=1.0, include_top=False)",
            "weights": config.weights, "fine_tune_at": config.fine_tune_at,
            "test_metrics": {"loss": final.get("test_loss"),
                             "per_phase": {name: p.get("test_accuracy") for name, p in phases.items()}},
            "training_seconds": sum(p.get("seconds", 0.0) for p in phases.values()),
            "images": {name: s["images"] for name, s in metrics["data"]["splits"].items()}}


def check_serving_config(config: TrainConfig) -> None:
    """Read --serving-config before training or exporting: a bad file is a ConfigError, not a late
    failure after a version was published (a retried Job would publish another each time)."""
    try:
        publish.protected_versions(config.serving_config, config.resolved_model_name)
    except publish.PublishError as err:
        raise ConfigError(str(err)) from None


def export_from_training(config: TrainConfig, model: keras.Model, data, metrics: dict) -> dict:
    """Stage, validate and publish; raises GateFailed or PublishError (nothing published) on failure."""
    servable = Servable(model, metrics["data"]["class_names"], config.resolved_model_name, config.img_size,
                        config.max_pixels, config.tta, warmup_images(data))
    gate = for_run(config, metrics, warmup_images=servable.warmup, reference_logits=servable.reference_logits())
    return publish.publish(
        base_path=config.model_base_path, model_name=config.resolved_model_name, gate=gate,
        write=lambda directory, version: servable.write(directory, about_run(config, metrics, version), gate),
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
        check_matches_training(config, metrics, metrics_path)  # the flags, before reading any data
        data = data_lib.load(config)
        check_matches_training(config, metrics, metrics_path, data.identity)  # the data as tested, by content
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    except data_lib.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        result = export_from_training(config, keras.models.load_model(model_path), data, metrics)
    except (GateFailed, publish.PublishError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

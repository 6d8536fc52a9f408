"""train-job (`python -m training`; `--help` lists every flag, each also a TRAIN_* variable): the tutorial as one
resumable command: config -> data -> model -> phase 1 -> phase 2 -> report -> export (validated, published)."""
from __future__ import annotations

import dataclasses
import os
import posixpath
import sys
import time

from training.config import CONFIG_ERROR_EXIT, ConfigError, TrainConfig, from_env_and_args


def _keep_caches_in(work_dir: str) -> None:
    """Keras and matplotlib caches go under a local work dir unless the user set them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    from publishing.storage import is_local

    if is_local(work_dir):  # gs://, s3://, ram://... leave Keras' and matplotlib's defaults
        os.environ.setdefault("KERAS_HOME", os.path.join(os.path.abspath(work_dir), "keras"))
        os.environ.setdefault("MPLCONFIGDIR", os.path.join(os.path.abspath(work_dir), "matplotlib"))


def run(config: TrainConfig) -> dict:
    import keras
    import tensorflow as tf

    from training import checkpoints, frozen_cache, phases, report
    from model_api import decision
    from training import data as data_lib
    from training import model as model_lib
    from publishing.gate import describe_data, say
    from training.loops import make_runtime

    runtime = make_runtime(config.batch_size)
    if config.export and runtime.is_chief:
        from training import export

        export.check_serving_config(config)  # before training, not after publishing
    # Non-chief workers write everything (checkpoints included) into their own scratch folder.
    config = dataclasses.replace(config, work_dir=runtime.work_dir_for(config.work_dir))
    work_dir = config.work_dir
    if config.restart:
        checkpoints.discard(work_dir)
        say(f"[restart] discarded the checkpoints in {work_dir}")
    checkpoints.check_resumable(config, runtime.shard.count)  # a changed setting stops the job before any work
    tf.io.gfile.makedirs(work_dir)
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    # 1. Data: train/validation/test splits of (uint8 image, label).
    data = data_lib.load(config)
    for name, split in data.splits().items():
        skipped = f", skipped {split.skipped} unreadable" if split.skipped else ""
        say(f"[data] {name}: {split.count} images{skipped}")
        for path, reason in split.skipped_files[:5]:
            say(f"[data]   skipped {path}: {reason}")
    say(f"[data] classes: {', '.join(data.class_names)} (from {data.source}: {describe_data(data.identity)})")
    if data.train.count == 0:
        raise data_lib.DataError("no decodable training images")
    checkpoints.check_resumable(config, runtime.shard.count, data.identity.get("fingerprint"))  # changed content

    # 2. Model: MobileNetV2 pretrained on ImageNet + GlobalAveragePooling + Dense logits.
    with runtime.strategy.scope():
        classifier = model_lib.build_classifier(len(data.class_names), config.img_size, config.weights,
                                                dropout=config.dropout, seed=config.seed)
    callbacks = [keras.callbacks.TensorBoard(posixpath.join(work_dir, "logs"), write_graph=False)]
    frozen = frozen_cache.FrozenParts(classifier, config, data, runtime.shard)  # caches shared by both phases

    # 3. Phase 1, feature extraction: train the head on the frozen base.
    with runtime.strategy.scope():
        results = [phases.feature_extraction(config, classifier, data, callbacks, frozen, runtime.shard)]

    # 4. Phase 2, fine-tuning: unfreeze the top of the base and train at a tenth of the rate.
    if config.fine_tune_epochs > 0:
        with runtime.strategy.scope():
            results.append(phases.fine_tuning(config, classifier, data, callbacks, frozen, runtime.shard))

    # 5. Report: metrics.json, learning curves, predictions on test images; the Keras model.
    model_path = posixpath.join(work_dir, "model.keras")
    classifier.model.save(model_path)
    report.plot_test_samples(classifier.model, data, config, posixpath.join(work_dir, "samples.png"))
    report.plot_learning_curves(results, posixpath.join(work_dir, "curves.png"))
    by_tta = report.accuracy_by_tta(classifier.model, data, config)
    metrics = report.build_metrics(config, data, results, {"model_path": model_path, "accuracy_by_tta": by_tta})
    report.write_metrics(work_dir, metrics)
    for split_name, accuracies in by_tta.items():
        say(f"[report] {split_name} accuracy as served: "
            + ", ".join(f"--tta {tta} {accuracy:.4f}" for tta, accuracy in accuracies.items()))
    say("[report] " + ", ".join(f"{r.name}: test accuracy {r.test_accuracy:.4f}, trained {r.train_seconds:.1f}s "
                                f"({r.images_per_second:.0f} images/s)" for r in results)
        + f"; served with --tta {config.tta}: test accuracy {_shown(decision.served_accuracy(metrics, config.tta))}")
    say(f"[report] wrote {work_dir}/metrics.json, curves.png, samples.png, model.keras; "
        f"TensorBoard logs in {work_dir}/logs")

    # 6. Export: a versioned SavedModel taking raw image bytes, validated, then published.
    if config.export and runtime.is_chief:
        from training import export

        published = export.export_from_training(config, classifier.model, data, metrics)
        metrics["export"] = published
        report.write_metrics(work_dir, metrics)
    return metrics


def _shown(accuracy: float | None) -> str:
    return "not measured" if accuracy is None else f"{accuracy:.4f}"


def main(argv=None) -> int:
    try:
        config = from_env_and_args(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    _keep_caches_in(config.work_dir)
    from training.checkpoints import ResumeConflict
    from training.data import DataError
    from training.model import WeightsUnavailable
    from publishing.publish import GateFailed, PublishError

    started = time.perf_counter()
    try:
        run(config)
    except (ConfigError, DataError, WeightsUnavailable, ResumeConflict) as err:
        print(f"error: {err}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    except (GateFailed, PublishError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    print(f"done in {time.perf_counter() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

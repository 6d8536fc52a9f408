"""Benchmark (not a test): this job against the tutorial's literal pipeline, same data and split.

    python bench/train_vs_seed.py --data-dir ../shared/data/cats_vs_dogs \
        --weights ../shared/pretrained/mobilenet_v2_1.0_imagenet_no_top.weights.h5 [--max-images 600 --epochs 2 ...]

The seed pipeline is the tutorial's code as written (TF 2.0 version):
    train_batches = train.map(format_example).shuffle(1000).batch(32)
    model = tf.keras.Sequential([base_model, GlobalAveragePooling2D(), Dense(1)])
    model.fit(train_batches, epochs=initial_epochs, validation_data=validation_batches)
    base_model.trainable = True; layers[:fine_tune_at] frozen; recompile at lr / 10
    model.fit(train_batches, epochs=total_epochs, initial_epoch=history.epoch[-1], ...)
(so its phase 2 runs fine_tune_epochs + 1 epochs; times are compared per epoch). Test accuracy
of both is computed the same way, from logits > 0 on the same test split.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def seed_pipeline(data, weights: str | None, img_size: int, epochs: int, fine_tune_epochs: int, fine_tune_at: int):
    import keras
    import numpy as np

    from model_api.preprocess import format_example

    def fmt(image, label):
        return format_example(image, img_size), label

    train_batches = data.train.images.map(fmt).shuffle(1000).batch(32)
    validation_batches = data.validation.images.map(fmt).batch(32)
    test_batches = data.test.images.map(fmt).batch(32)

    base_model = keras.applications.MobileNetV2(input_shape=(img_size, img_size, 3), include_top=False,
                                                weights=weights)
    base_model.trainable = False
    model = keras.Sequential([base_model, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=1e-4),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"])

    def test_accuracy():
        logits, labels = [], []
        for x, y in test_batches:
            logits.append(model(x, training=False).numpy()[:, 0])
            labels.append(y.numpy())
        return float(np.mean((np.concatenate(logits) > 0) == np.concatenate(labels)))

    started = time.perf_counter()
    history = model.fit(train_batches, epochs=epochs, validation_data=validation_batches, verbose=0)
    phase1 = {"seconds": time.perf_counter() - started, "epochs": epochs}
    phase1["test_accuracy"] = test_accuracy()
    print(f"[seed] phase 1: {phase1['seconds']:.1f}s for {epochs} epochs, test accuracy {phase1['test_accuracy']:.4f}",
          flush=True)
    base_model.trainable = True
    for layer in base_model.layers[:fine_tune_at]:
        layer.trainable = False
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=1e-5),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"])
    phase2 = {"seconds": 0.0, "epochs": 0, "test_accuracy": phase1["test_accuracy"]}
    if fine_tune_epochs:
        started = time.perf_counter()
        model.fit(train_batches, epochs=epochs + fine_tune_epochs, initial_epoch=history.epoch[-1],
                  validation_data=validation_batches, verbose=0)
        phase2 = {"seconds": time.perf_counter() - started,
                  "epochs": epochs + fine_tune_epochs - history.epoch[-1], "test_accuracy": test_accuracy()}
        print(f"[seed] phase 2: {phase2['seconds']:.1f}s for {phase2['epochs']} epochs, "
              f"test accuracy {phase2['test_accuracy']:.4f}", flush=True)
    return phase1, phase2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--max-images", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fine-tune-epochs", type=int, default=10)
    parser.add_argument("--fine-tune-at", type=int, default=100)
    parser.add_argument("--img-size", type=int, default=160)
    parser.add_argument("--work-dir", default=None, help="default: a temporary folder")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench-")
    os.environ.setdefault("KERAS_HOME", os.path.join(work_dir, "keras"))
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(work_dir, "matplotlib"))

    from training import data as data_lib
    from training.__main__ import run
    from training.config import from_env_and_args
    from training.model import resolve_weights

    config = from_env_and_args(
        ["--data-dir", args.data_dir, "--weights", args.weights, "--max-images", str(args.max_images),
         "--epochs", str(args.epochs), "--fine-tune-epochs", str(args.fine_tune_epochs),
         "--fine-tune-at", str(args.fine_tune_at), "--img-size", str(args.img_size),
         "--work-dir", os.path.join(work_dir, "job"), "--no-export"], environ={})
    metrics = run(config)
    ours = metrics["phases"]
    for name, phase in ours.items():
        print(f"[job] {name}: {phase['seconds']:.1f}s for {phase['epochs']} epochs, "
              f"test accuracy {phase['test_accuracy']:.4f}", flush=True)

    data = data_lib.load(config)
    seed1, seed2 = seed_pipeline(data, resolve_weights(args.weights), args.img_size, args.epochs,
                                 args.fine_tune_epochs, args.fine_tune_at)

    def per_epoch(seconds, epochs):
        return seconds / epochs if epochs else float("nan")

    rows = []
    o1 = ours["feature_extraction"]
    rows.append(("phase 1 (feature extraction)", seed1["seconds"], seed1["epochs"], seed1["test_accuracy"],
                 o1["seconds"], o1["epochs"], o1["test_accuracy"]))
    if "fine_tuning" in ours:
        o2 = ours["fine_tuning"]
        rows.append(("phase 2 (fine-tuning)", seed2["seconds"], seed2["epochs"], seed2["test_accuracy"],
                     o2["seconds"], o2["epochs"], o2["test_accuracy"]))
    print(f"\ndata: {args.data_dir} train/val/test = {data.train.count}/{data.validation.count}/{data.test.count}")
    print(f"{'':30} {'seed s':>9} {'ep':>3} {'seed acc':>9} {'job s':>9} {'ep':>3} {'job acc':>8}"
          f" {'speed-up':>9} {'per epoch':>10}")
    results = []
    for name, ss, se, sa, js, je, ja in rows:
        ratio_epoch = per_epoch(ss, se) / per_epoch(js, je)
        print(f"{name:30} {ss:9.1f} {se:3d} {sa:9.4f} {js:9.1f} {je:3d} {ja:8.4f} {ss / js:8.2f}x {ratio_epoch:9.2f}x")
        results.append({"phase": name, "seed_seconds": ss, "seed_epochs": se, "seed_test_accuracy": sa,
                        "job_seconds": js, "job_epochs": je, "job_test_accuracy": ja,
                        "speedup_total": ss / js, "speedup_per_epoch": ratio_epoch})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

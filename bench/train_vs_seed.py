"""Benchmark (not a test): train-job against the tutorial's literal pipeline, each in its own process,
on the same photos, split and weights.

    python bench/train_vs_seed.py --data-dir ../shared/data/cats_vs_dogs \
        --weights ../shared/pretrained/mobilenet_v2_1.0_imagenet_no_top.weights.h5 [--max-images 600 --epochs 2 ...]

Each side runs as a separate Python process, one after the other (never at once: two processes on the
same cores would time each other), so "whole run" is what a user waits for: interpreter start, imports,
loading the photos, both phases, evaluation, and for train-job its report (metrics.json, plots, the
model file; `--no-export`, since the tutorial exports nothing).

The seed pipeline is the tutorial's code as written (TF 2.0 version):
    train_batches = train.map(format_example).shuffle(1000).batch(32)
    model = tf.keras.Sequential([base_model, GlobalAveragePooling2D(), Dense(1)])
    model.fit(train_batches, epochs=initial_epochs, validation_data=validation_batches)
    base_model.trainable = True; layers[:fine_tune_at] frozen; recompile at lr / 10
    model.fit(train_batches, epochs=total_epochs, initial_epoch=history.epoch[-1], ...)
(so its phase 2 runs fine_tune_epochs + 1 epochs; phase 2 is compared per epoch). It reads the photos
through train-job's loader, so both sides train and test on the same split. Test accuracy of both is
computed the same way, from logits > 0 on that test split.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


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


def job_flags(args, work_dir: str) -> list[str]:
    return ["--data-dir", args.data_dir, "--weights", args.weights, "--max-images", str(args.max_images),
            "--epochs", str(args.epochs), "--fine-tune-epochs", str(args.fine_tune_epochs),
            "--fine-tune-at", str(args.fine_tune_at), "--img-size", str(args.img_size),
            "--work-dir", work_dir, "--no-export", *args.job_flag]


def run_seed(args, work_dir: str, out: str) -> None:
    """The child process of the seed side: the tutorial's pipeline on train-job's split."""
    os.environ.setdefault("KERAS_HOME", os.path.join(work_dir, "keras"))
    from training import data as data_lib
    from training.config import from_env_and_args
    from training.model import resolve_weights

    config = from_env_and_args(job_flags(args, os.path.join(work_dir, "seed")), environ={})
    data = data_lib.load(config)
    phase1, phase2 = seed_pipeline(data, resolve_weights(args.weights), args.img_size, args.epochs,
                                   args.fine_tune_epochs, args.fine_tune_at)
    counts = {"train": data.train.count, "validation": data.validation.count, "test": data.test.count}
    with open(out, "w") as f:
        json.dump({"phases": [phase1, phase2], "splits": counts}, f)


def timed(command: list[str], log_path: str) -> float:
    """Run one side in its own process, its output teed to the console and `log_path`; its wall seconds."""
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        for line in process.stdout:
            log.write(line)
            if line.startswith("[") or line.startswith("done") or line.startswith("error"):
                print("   ", line, end="", flush=True)
        if process.wait():
            raise SystemExit(f"{command[2]} failed (exit {process.returncode}); its output: {log_path}")
    return time.perf_counter() - started


def load_average() -> str:
    try:
        return "%.2f" % os.getloadavg()[0]
    except OSError:
        return "?"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--max-images", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fine-tune-epochs", type=int, default=10)
    parser.add_argument("--fine-tune-at", type=int, default=100)
    parser.add_argument("--img-size", type=int, default=160)
    parser.add_argument("--job-flag", action="append", default=[],
                        help="one more train-job flag (repeatable, e.g. --job-flag=--early-stopping-patience=3)")
    parser.add_argument("--work-dir", default=None, help="default: a temporary folder")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--seed-only-into", help=argparse.SUPPRESS)  # the seed side's child process
    args = parser.parse_args(argv)
    work_dir = os.path.abspath(args.work_dir or tempfile.mkdtemp(prefix="bench-"))
    if args.seed_only_into:
        run_seed(args, work_dir, args.seed_only_into)
        return 0

    os.makedirs(work_dir, exist_ok=True)
    job_dir = os.path.join(work_dir, "job")
    print(f"[bench] train-job in its own process (work dir {job_dir}; load average {load_average()})", flush=True)
    job_command = [sys.executable, "-m", "training", *job_flags(args, job_dir)]
    job_seconds = timed(job_command, os.path.join(work_dir, "job.log"))
    with open(os.path.join(job_dir, "metrics.json")) as f:
        ours = json.load(f)["phases"]
    seed_out = os.path.join(work_dir, "seed.json")
    print(f"[bench] the tutorial's pipeline in its own process (load average {load_average()})", flush=True)
    given = sys.argv[1:] if argv is None else list(argv)
    seed_command = [sys.executable, os.path.abspath(__file__), *given, "--work-dir", work_dir,
                    "--seed-only-into", seed_out]
    seed_seconds = timed(seed_command, os.path.join(work_dir, "seed.log"))
    with open(seed_out) as f:
        seed = json.load(f)
    print(report(ours, seed, job_seconds, seed_seconds, args.data_dir))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"job": {"whole_seconds": job_seconds, "phases": ours},
                       "seed": {"whole_seconds": seed_seconds, **seed}}, f, indent=2)
    return 0


def report(ours: dict, seed: dict, job_seconds: float, seed_seconds: float, data_dir: str) -> str:
    splits = seed["splits"]
    rows = [("phase 1 (feature extraction)", seed["phases"][0], ours["feature_extraction"])]
    if "fine_tuning" in ours:
        rows.append(("phase 2 (fine-tuning)", seed["phases"][1], ours["fine_tuning"]))
    lines = [f"\ndata: {data_dir} train/validation/test = {splits['train']}/{splits['validation']}/{splits['test']}",
             f"{'':30} {'seed s':>8} {'ep':>3} {'s/epoch':>8} {'seed acc':>8}   {'job s':>7} {'ep':>3} "
             f"{'s/epoch':>8} {'job acc':>7}   {'speed-up':>8} {'per epoch':>9}"]
    for name, s, j in rows:
        s_epoch, j_epoch = s["seconds"] / max(s["epochs"], 1), j["seconds"] / max(j["epochs"], 1)
        lines.append(f"{name:30} {s['seconds']:8.1f} {s['epochs']:3d} {s_epoch:8.1f} {s['test_accuracy']:8.4f}   "
                     f"{j['seconds']:7.1f} {j['epochs']:3d} {j_epoch:8.1f} {j['test_accuracy']:7.4f}   "
                     f"{s['seconds'] / j['seconds']:7.2f}x {s_epoch / j_epoch:8.2f}x")
    last_seed, last_job = rows[-1][1], rows[-1][2]
    lines.append(f"{'whole run (own process)':30} {seed_seconds:8.1f} {'':3} {'':8} {last_seed['test_accuracy']:8.4f}   "
                 f"{job_seconds:7.1f} {'':3} {'':8} {last_job['test_accuracy']:7.4f}   {seed_seconds / job_seconds:7.2f}x")
    lines.append("job phase seconds include its caches and evaluation: "
                 + ", ".join(f"{name} caches {p['cache_seconds']:.1f}s, training {p['train_seconds']:.1f}s, "
                             f"evaluating {p['evaluate_seconds']:.1f}s" for name, p in ours.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

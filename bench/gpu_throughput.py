"""Benchmark (not a test): training-step and served-signature throughput on a GPU, float32 vs mixed precision.

    python bench/gpu_throughput.py [--batches 32 64 128 256] [--precisions float32 mixed_float16]
                                   [--images PHOTOS/] [--steps 20] [--weights none|imagenet|PATH]
    python bench/gpu_throughput.py --smoke        # a tiny run that works without a GPU

For each precision and batch size, on the project's own MobileNetV2 classifier (training/model.py):
- train:     fine-tuning steps (the base trainable from TrainConfig's fine_tune_at, RMSprop, the
             project's loss) on an in-memory float batch: images/s of the step alone, no input pipeline;
- network:   `predict_images` (preprocessed floats in) of the exported SavedModel run in TF Serving's
             session path (model_api/session_bundle.py);
- signature: `serving_default` (encoded JPEG bytes in: decode and resize on the CPU, the network on
             the GPU) in the same Session.
Prints one table; a batch that runs out of GPU memory prints OOM. Without a GPU it refuses to run
(figures on a CPU would be read as GPU figures) unless --smoke, which runs a 32-px model at batches
2 and 4 for a few steps to check the script itself and says that no GPU was found.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.tta_latency import folder_images, synthetic_jpegs  # noqa: E402

PRECISIONS = ("float32", "mixed_float16")


def gpu_names() -> list[str]:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:  # take memory as needed, so a serving Session can share the GPU with the training model
        tf.config.experimental.set_memory_growth(gpu, True)
    return [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]


def build(precision: str, img_size: int, weights: str):
    """The classifier under `precision` (the head stays float32: training/model.py)."""
    import keras

    from training.model import build_classifier

    keras.mixed_precision.set_global_policy(precision)
    try:
        return build_classifier(2, img_size, weights)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def rate(run, batch: int, steps: int) -> float:
    """Images/s: the median of `steps` timed calls after two untimed ones (tracing, autotuning)."""
    for _ in range(2):
        run()
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return batch / statistics.median(seconds)


def train_rates(precision: str, args) -> dict[int, float | str]:
    import numpy as np

    from training.config import TrainConfig
    from training.model import compile_for, unfreeze_from

    classifier = build(precision, args.img_size, args.weights)
    unfreeze_from(classifier, TrainConfig().fine_tune_at)
    compile_for(classifier.model, 2, learning_rate=1e-5)
    rng = np.random.default_rng(0)
    rates = {}
    for batch in args.batches:
        x = rng.uniform(-1, 1, (batch, args.img_size, args.img_size, 3)).astype(np.float32)
        y = rng.integers(0, 2, (batch, 1)).astype(np.float32)
        rates[batch] = guarded(lambda: rate(lambda: classifier.model.train_on_batch(x, y), batch, args.steps))
    return rates


def serving_rates(precision: str, args, jpegs: list[bytes]) -> dict[tuple[str, int], float | str]:
    import numpy as np

    from model_api import signature as sig
    from model_api.session_bundle import SessionBundle
    from publishing import archive

    classifier = build(precision, args.img_size, args.weights)
    rates = {}
    with tempfile.TemporaryDirectory() as work:
        archive.build_archive(classifier.model, ["cat", "dog"], args.img_size).write_out(work, verbose=False)
        bundle = SessionBundle(work)
        try:
            for batch in args.batches:
                floats = np.random.default_rng(batch).uniform(-1, 1, (batch, args.img_size, args.img_size, 3))
                encoded = np.array([jpegs[i % len(jpegs)] for i in range(batch)], dtype=object)
                rates["network", batch] = guarded(lambda: rate(lambda: bundle.run(
                    sig.PREDICT_IMAGES, {sig.INPUT_IMAGES: floats.astype(np.float32)}), batch, args.steps))
                rates["signature", batch] = guarded(lambda: rate(lambda: bundle.run(
                    sig.SERVING_DEFAULT, {sig.INPUT_IMAGE_BYTES: encoded}), batch, args.steps))
        finally:
            bundle.close()
    return rates


def guarded(measure) -> float | str:
    """The measured rate, or "OOM" when the batch does not fit in GPU memory."""
    import tensorflow as tf

    try:
        return measure()
    except tf.errors.ResourceExhaustedError:
        return "OOM"


def cell(value) -> str:
    return f"{value:>10.1f}" if isinstance(value, float) else f"{value:>10}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--img-size", type=int, default=160)
    parser.add_argument("--steps", type=int, default=20, help="timed calls per case (median reported)")
    parser.add_argument("--weights", default="none", help="'none' (random, default), 'imagenet' or a weights file")
    parser.add_argument("--images", help="folder of JPEG/PNG photos for the signature (default: synthetic)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; runs without a GPU (checks the script)")
    args = parser.parse_args(argv)

    gpus = gpu_names()
    if args.smoke:
        args.batches, args.img_size, args.steps = [2, 4], 32, 2
    if not gpus:
        if not args.smoke:
            print("no GPU found (tf.config.list_physical_devices('GPU') is empty): nothing measured; "
                  "--smoke checks the script on a CPU", file=sys.stderr)
            return 2
        print("no GPU found: smoke run on the CPU, these figures are not GPU results")
    else:
        print(f"GPU(s): {', '.join(gpus)}")
    jpegs = folder_images(args.images, max(args.batches)) if args.images else synthetic_jpegs(8)
    print(f"{args.img_size} px, weights {args.weights}, median of {args.steps} steps, "
          f"{len(jpegs)} distinct images for the signature", flush=True)
    rows = []
    for precision in args.precisions:
        train = train_rates(precision, args)
        serve = serving_rates(precision, args, jpegs)
        rows += [(precision, batch, train[batch], serve["network", batch], serve["signature", batch])
                 for batch in args.batches]
        print(f"  {precision} done", flush=True)
    print(f"\n{'precision':<14} {'batch':>5} | {'train img/s':>10} | {'network':>10} | {'signature':>10}")
    for precision, batch, *values in rows:
        print(f"{precision:<14} {batch:>5} | " + " | ".join(cell(v) for v in values))
    return 0


if __name__ == "__main__":
    sys.exit(main())

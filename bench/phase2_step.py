"""Benchmark (not a test): phase 2's training step alone, the top and head on cached trunk outputs held in
memory, so an epoch's floor is known without the input pipeline, and the levers measured against it.

    python bench/phase2_step.py --weights ../shared/pretrained/mobilenet_v2_1.0_imagenet_no_top.weights.h5 \
        [--img-size 160 --images 1600 --epochs 6 --variants plain,xla,bfloat16]

Each variant runs in its own process (a Keras dtype policy is global): `plain` is what train-job runs,
`xla` compiles the step with jit_compile=True, `bfloat16` uses the mixed_bfloat16 policy. Inputs are random
(the step's cost does not depend on their values); the rate is training images per second, each epoch
one `fit` call as in train-job. docs/benchmarks.md has the figures measured on the 2-core machine.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
VARIANTS = ("plain", "xla", "bfloat16")


def measure(variant: str, weights: str, img_size: int, images: int, epochs: int, fine_tune_at: int) -> list[float]:
    import keras
    import numpy as np
    import tensorflow as tf

    if variant == "bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    from training.model import build_classifier, compile_for, cut_layer_index, split_at, unfreeze_from

    classifier = build_classifier(2, img_size, weights)
    unfreeze_from(classifier, fine_tune_at)
    _, top = split_at(classifier.base, cut_layer_index(classifier.base, fine_tune_at))
    cut_input = keras.Input(top.input.shape[1:])
    model = keras.Model(cut_input, classifier.logits(classifier.pool(top(cut_input, training=False))))
    compile_for(model, 2, 1e-5)
    if variant == "xla":
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"], jit_compile=True)
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(images, *top.input.shape[1:])).astype("float32")
    labels = rng.integers(0, 2, size=images)
    batches = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(32)
    model.fit(batches.take(3), verbose=0)  # trace (and compile) before timing
    rates = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.fit(batches, epochs=1, verbose=0)
        rates.append(images / (time.perf_counter() - started))
    return rates


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--img-size", type=int, default=160)
    parser.add_argument("--fine-tune-at", type=int, default=100)
    parser.add_argument("--images", type=int, default=1600)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--only", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant's child process
    args = parser.parse_args(argv)
    if args.only:
        rates = measure(args.only, args.weights, args.img_size, args.images, args.epochs, args.fine_tune_at)
        print(f"{args.only:10} images/s per epoch: " + " ".join(f"{rate:.0f}" for rate in rates)
              + f"  (best {max(rates):.0f})", flush=True)
        return 0
    variants = args.variants.split(",")
    unknown = [variant for variant in variants if variant not in VARIANTS]
    if unknown:  # before any variant runs, not after the first ones have
        parser.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    given = sys.argv[1:] if argv is None else list(argv)
    for variant in variants:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        subprocess.run([sys.executable, os.path.abspath(__file__), *given, "--only", variant], env=env, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

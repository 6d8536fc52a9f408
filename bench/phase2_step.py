"""Benchmark (not a test): phase 2's training step alone, the top and head on cached trunk outputs held in
memory, so an epoch's floor is known without the input pipeline, and the levers measured against it.

    python bench/phase2_step.py --weights ../shared/pretrained/mobilenet_v2_1.0_imagenet_no_top.weights.h5 \
        [--img-size 160 --images 1600 --epochs 6 --variants plain,xla,bfloat16,uncut] [--profile-steps 20]

Each variant runs in its own process (a Keras dtype policy is global): `plain` is what train-job runs,
`xla` compiles the step with jit_compile=True, `bfloat16` uses the mixed_bfloat16 policy, `uncut` is the
tutorial's step (the whole network on images already decoded: the frozen trunk's forward pass runs in every
step). Inputs are random (the step's cost does not depend on their values); the rate is training images per
second, each epoch one `fit` call as in train-job. --profile-steps N then traces N more steps with
tf.profiler and prints where they spend their time, per pass and op type (bench/op_profile.py).
docs/benchmarks.md has the figures measured on the 2-core machine.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
VARIANTS = ("plain", "xla", "bfloat16", "uncut")


def step_model(variant: str, weights: str, img_size: int, fine_tune_at: int):
    """Phase 2's model compiled as train-job compiles it: the top and head on the cut (or, for `uncut`, the
    whole network on images)."""
    import keras

    from training.model import build_classifier, compile_for, cut_layer_index, split_at, unfreeze_from

    classifier = build_classifier(2, img_size, weights)
    unfreeze_from(classifier, fine_tune_at)
    if variant == "uncut":
        model = classifier.model
    else:
        _, top = split_at(classifier.base, cut_layer_index(classifier.base, fine_tune_at))
        cut_input = keras.Input(top.input.shape[1:])
        model = keras.Model(cut_input, classifier.logits(classifier.pool(top(cut_input, training=False))))
    compile_for(model, 2, 1e-5)
    if variant == "xla":
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"], jit_compile=True)
    return model


def measure(variant: str, weights: str, img_size: int, images: int, epochs: int, fine_tune_at: int,
            profile_steps: int = 0) -> list[float]:
    import keras
    import numpy as np
    import tensorflow as tf

    if variant == "bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    from training.pipeline import without_autotune_thread

    model = step_model(variant, weights, img_size, fine_tune_at)
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(images, *model.input.shape[1:])).astype("float32")
    labels = rng.integers(0, 2, size=images)
    # as train-job's batches are, so an epoch's end does not wait on tf.data's autotuning thread
    batches = without_autotune_thread(tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(32))
    model.fit(batches.take(3), verbose=0)  # trace (and compile) before timing
    rates = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.fit(batches, epochs=1, verbose=0)
        rates.append(images / (time.perf_counter() - started))
    if profile_steps:
        import tempfile

        import op_profile

        with tempfile.TemporaryDirectory() as logdir:
            space = op_profile.capture(lambda: model.fit(batches.take(profile_steps), verbose=0), logdir)
        print(f"{variant}: " + op_profile.summary(op_profile.op_times(space), profile_steps), flush=True)
    return rates


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--img-size", type=int, default=160)
    parser.add_argument("--fine-tune-at", type=int, default=100)
    parser.add_argument("--images", type=int, default=1600)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--variants", default="plain,xla,bfloat16")
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="after timing, trace this many steps and print their time per pass and op type")
    parser.add_argument("--only", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant's child process
    args = parser.parse_args(argv)
    if args.only:
        rates = measure(args.only, args.weights, args.img_size, args.images, args.epochs, args.fine_tune_at,
                        args.profile_steps)
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

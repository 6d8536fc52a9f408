"""Benchmark (not a test): what `--tta flip` costs per image in the exported signature.

    python bench/tta_latency.py [--weights PATH|none] [--images PHOTOS/] [--img-size 160] [--repeats 20]

Exports one MobileNetV2 classifier twice, without and with test-time augmentation, loads each
the way TF Serving does (model_api/session_bundle.py) and times `serving_default` on encoded
images at batch 1 and 32: median milliseconds per request and per image. Latency does not
depend on the weights' values, so the default random weights give the same figures as
trained ones. Without --images it encodes synthetic 500x375 JPEGs (cats_vs_dogs' typical size).
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

BATCHES = (1, 32)


def synthetic_jpegs(count: int, seed: int = 0) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def folder_images(folder: str, count: int) -> list[bytes]:
    paths = sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
                   if name.lower().endswith((".jpg", ".jpeg", ".png")))[:count]
    if not paths:
        raise SystemExit(f"error: no .jpg/.jpeg/.png files under {folder}")
    images = []
    for path in paths:
        with open(path, "rb") as f:
            images.append(f.read())
    return images


def time_signature(bundle, images: list[bytes], batch: int, repeats: int) -> float:
    """Median seconds of one serving_default request of `batch` images (after two warm-ups)."""
    from model_api import signature as sig

    feed = {sig.INPUT_IMAGE_BYTES: np.array([images[i % len(images)] for i in range(batch)], dtype=object)}
    for _ in range(2):
        bundle.run(sig.SERVING_DEFAULT, feed)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        bundle.run(sig.SERVING_DEFAULT, feed)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="none", help="'none' (random, default), 'imagenet' or a weights file.")
    parser.add_argument("--images", help="Folder of JPEG/PNG files to send (default: synthetic JPEGs).")
    parser.add_argument("--img-size", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=20, help="Timed requests per case (median reported).")
    parser.add_argument("--work-dir", help="Where to write the two SavedModels (default: a temporary folder).")
    args = parser.parse_args(argv)

    from model_api.session_bundle import SessionBundle
    from publishing import archive
    from training.model import build_classifier

    images = folder_images(args.images, max(BATCHES)) if args.images else synthetic_jpegs(max(BATCHES))
    model = build_classifier(2, args.img_size, args.weights).model
    results = {}
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        for tta in ("none", "flip"):
            path = os.path.join(work, tta)
            archive.build_archive(model, ["cat", "dog"], args.img_size, tta=tta).write_out(path, verbose=False)
            bundle = SessionBundle(path)
            try:
                for batch in BATCHES:
                    results[tta, batch] = time_signature(bundle, images, batch, args.repeats)
                    print(f"tta={tta:<4} batch={batch:>2}: {results[tta, batch] * 1e3:8.1f} ms/request "
                          f"{results[tta, batch] * 1e3 / batch:7.2f} ms/image", flush=True)
            finally:
                bundle.close()
    print(f"\n{'batch':>5} | {'no TTA ms/image':>15} | {'flip TTA ms/image':>17} | cost")
    for batch in BATCHES:
        plain, flip = results["none", batch] * 1e3 / batch, results["flip", batch] * 1e3 / batch
        print(f"{batch:>5} | {plain:15.2f} | {flip:17.2f} | {flip / plain:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark (not a test): peak memory and cache time of the training job as the image count grows.

    python bench/cache_memory.py --data-dir ../shared/data/cats_vs_dogs \
        --weights ../shared/pretrained/mobilenet_v2_1.0_imagenet_no_top.weights.h5 \
        [--copies 1 10] [--img-size 96] [--epochs 1 --fine-tune-epochs 1]

For each N in --copies it builds a temporary folder holding every photo N times under other
names (symlinks: 6,000 photos x 10 = 60,000 images), runs `train-job --no-export` on it in a
child process and reports the child's peak RSS (os.wait4's ru_maxrss), the time until each
phase's cached inputs were ready, and the whole run's time. The caches are streamed from the
work dir (training/frozen_cache.py), so the peak should barely grow with the number of images.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def replicate(data_dir: str, copies: int, into: str) -> int:
    """Symlink every file of each class folder `copies` times; returns the image count."""
    count = 0
    for name in sorted(os.listdir(data_dir)):
        source = os.path.join(data_dir, name)
        if not os.path.isdir(source) or name.startswith("."):
            continue
        target = os.path.join(into, name)
        os.makedirs(target)
        for file_name in sorted(os.listdir(source)):
            if file_name.startswith("."):
                continue
            stem, ext = os.path.splitext(file_name)
            for copy in range(copies):
                os.symlink(os.path.abspath(os.path.join(source, file_name)),
                           os.path.join(target, f"{stem}-{copy}{ext}"))
                count += 1
    return count


def run_job(args: list[str]) -> dict:
    """Run the job in a child; its peak RSS in MiB, wall time and the cache lines it printed."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "training", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"train-job failed:\n{output[-3000:]}")
    ready = [float(x) for x in re.findall(r"cached inputs ready after ([\d.]+)s", output)]
    return {"peak_rss_mib": usage.ru_maxrss / 1024, "seconds": seconds, "cache_seconds": sum(ready),
            "cache_lines": ready}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--img-size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--fine-tune-epochs", type=int, default=1)
    parser.add_argument("--scratch", default=None, help="Where the folders and work dirs go (default: a temp dir).")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(dir=args.scratch, prefix="cache-bench-") as scratch:
        for copies in args.copies:
            folder = os.path.join(scratch, f"photos-x{copies}", os.path.basename(os.path.normpath(args.data_dir)))
            images = replicate(args.data_dir, copies, folder)
            work = os.path.join(scratch, f"work-x{copies}")
            print(f"[bench] {images} images ({copies}x), --img-size {args.img_size} ...", flush=True)
            result = run_job(["--data-dir", folder, "--weights", args.weights, "--img-size", str(args.img_size),
                              "--epochs", str(args.epochs), "--fine-tune-epochs", str(args.fine_tune_epochs),
                              "--work-dir", work, "--no-export"])
            rows.append((images, result))
            print(f"[bench] {images} images: peak RSS {result['peak_rss_mib']:.0f} MiB, caches ready after "
                  f"{result['cache_seconds']:.0f}s, whole run {result['seconds']:.0f}s", flush=True)
    print("\n| images | img size | peak RSS (MiB) | vs first | caches ready (s) | whole run (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    first = rows[0][1]["peak_rss_mib"]
    for images, result in rows:
        print(f"| {images:,} | {args.img_size} | {result['peak_rss_mib']:.0f} | {result['peak_rss_mib'] / first:.2f}x "
              f"| {result['cache_seconds']:.0f} | {result['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

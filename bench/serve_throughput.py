"""Benchmark (not a test): requests/s and latency of a served model through this project's client.

    python bench/serve_throughput.py --grpc localhost:8500 --model cats_vs_dogs --images PHOTOS/ \
        [--requests 200 --concurrency 4 --batch-size 1]

Works against the local server or TensorFlow Serving alike. Every request sends real files'
bytes; the run is bounded by --requests and --seconds and only talks to the address given.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from client import ModelClient, ServerError, expand_paths  # noqa: E402


def run_load(make_client, images: list, requests: int, concurrency: int, batch_size: int,
             seconds: float) -> dict:
    """`concurrency` threads, each with its own client, send `requests` requests of `batch_size`
    images between them; returns latencies (ms, sorted), wall seconds and failures."""
    with make_client() as warm:  # connect, and let the server's first request happen outside the timing
        warm.predict_bytes(images[:batch_size])
    latencies, errors, lock = [], [], threading.Lock()
    counter = iter(range(requests))
    deadline = time.monotonic() + seconds

    def worker():
        with make_client() as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                batch = [images[(i * batch_size + k) % len(images)] for k in range(batch_size)]
                started = time.perf_counter()
                try:
                    results = client.predict_bytes(batch)
                    failed = [r for r in results if not r.ok]
                except ServerError as err:
                    failed = [err]
                with lock:
                    latencies.append(time.perf_counter() - started)
                    errors.extend(failed)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"ms": sorted(1000 * x for x in latencies), "wall": time.perf_counter() - started, "errors": errors,
            "batch_size": batch_size}


def percentile(ms: list[float], q: float) -> float:
    return ms[min(len(ms) - 1, int(q * len(ms)))]


def report(label: str, result: dict) -> str:
    ms, wall, size = result["ms"], result["wall"], result["batch_size"]
    return (f"{label}: {len(ms)} requests x {size} image(s) in {wall:.1f}s: {len(ms) / wall:.1f} requests/s, "
            f"{len(ms) * size / wall:.1f} images/s, errors {len(result['errors'])}; latency ms p50 "
            f"{percentile(ms, 0.5):.1f} p90 {percentile(ms, 0.9):.1f} p99 {percentile(ms, 0.99):.1f} "
            f"mean {statistics.mean(ms):.1f} max {ms[-1]:.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--grpc")
    where.add_argument("--rest")
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", required=True, nargs="+", help="image files or folders")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=120.0, help="stop after this long in any case")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1, help="images per request")
    args = parser.parse_args(argv)

    images = read_images(args.images, args.batch_size * args.requests)
    make = (lambda: ModelClient.grpc(args.grpc, args.model, batch_size=args.batch_size)) if args.grpc else \
        (lambda: ModelClient.rest(args.rest, args.model, batch_size=args.batch_size))
    result = run_load(make, images, args.requests, args.concurrency, args.batch_size, args.seconds)
    if not result["ms"]:
        print("no request completed")
        return 1
    transport = "gRPC" if args.grpc else "REST"
    print(report(f"{transport} {args.model}, concurrency {args.concurrency}", result))
    return 0 if not result["errors"] else 1


def read_images(given: list[str], count: int) -> list[tuple[str, bytes]]:
    paths = expand_paths(given)[:max(count, 1)]
    return [(p, open(p, "rb").read()) for p in paths]


if __name__ == "__main__":
    sys.exit(main())

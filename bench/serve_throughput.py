"""Benchmark (not a test): requests/s and latency of a served model through this project's client.

    python bench/serve_throughput.py --grpc localhost:8500 --model cats_vs_dogs --images PHOTOS/ \
        [--requests 200 --concurrency 4 --batch-size 1]

Works against the local server or TensorFlow Serving alike. Every request sends real files'
bytes; the run is bounded by --requests and --seconds and only talks to the address given.
The clients never retry (a retried UNAVAILABLE would hide an overloaded server inside the
latency), throughput counts only answered images, and a run with any error prints its rate
marked INVALID, never as a result (exit status 1).
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


def bench_client(address: str, model: str, batch_size: int, grpc: bool = True) -> ModelClient:
    """A client for load: no retries, so every failure is counted, not absorbed."""
    make = ModelClient.grpc if grpc else ModelClient.rest
    return make(address, model, batch_size=batch_size, retries=0)


def run_load(make_client, images: list, requests: int, concurrency: int, batch_size: int,
             seconds: float) -> dict:
    """`concurrency` threads, each with its own client, send `requests` requests of `batch_size`
    images between them. Returns the latencies (ms, sorted) of the requests whose every image
    was answered, the number of requests sent, the images answered, the errors (one per
    failed image, or per failed request with its image count) and the wall seconds."""
    with make_client() as warm:  # connect, and let the server's first request happen outside the timing
        warm.predict_bytes(images[:batch_size])
    latencies, errors, lock = [], [], threading.Lock()
    sent, answered = [0], [0]
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
                    failed = [f"{r.source}: {r.error}" for r in results if not r.ok]
                    ok = len(results) - len(failed)
                except ServerError as err:
                    failed, ok = [f"{len(batch)} image(s): {err.code}: {err.message}"] * len(batch), 0
                elapsed = time.perf_counter() - started
                with lock:
                    sent[0] += 1
                    answered[0] += ok
                    errors.extend(failed)
                    if not failed:
                        latencies.append(elapsed)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"ms": sorted(1000 * x for x in latencies), "wall": time.perf_counter() - started, "errors": errors,
            "requests": sent[0], "images": answered[0], "batch_size": batch_size}


def images_per_second(result: dict) -> float | None:
    """Answered images per second; None when any image failed: such a rate is not a result."""
    return None if result["errors"] else result["images"] / result["wall"]


def percentile(ms: list[float], q: float) -> float:
    return ms[min(len(ms) - 1, int(q * len(ms)))]


def report(label: str, result: dict) -> str:
    ms, wall, size, errors = result["ms"], result["wall"], result["batch_size"], result["errors"]
    line = (f"{label}: {result['requests']} requests x {size} image(s) in {wall:.1f}s, {result['images']} images "
            f"answered, errors {len(errors)}: ")
    rates = f"{len(ms) / wall:.1f} requests/s, {result['images'] / wall:.1f} images/s"
    latency = (f"; latency ms p50 {percentile(ms, 0.5):.1f} p90 {percentile(ms, 0.9):.1f} "
               f"p99 {percentile(ms, 0.99):.1f} mean {statistics.mean(ms):.1f} max {ms[-1]:.1f}" if ms else "")
    if errors:
        return line + f"INVALID (not a result: {len(errors)} image(s) failed, first: {errors[0]}) [{rates}{latency}]"
    return line + rates + latency


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
    make = lambda: bench_client(args.grpc or args.rest, args.model, args.batch_size, grpc=bool(args.grpc))
    result = run_load(make, images, args.requests, args.concurrency, args.batch_size, args.seconds)
    transport = "gRPC" if args.grpc else "REST"
    print(report(f"{transport} {args.model}, concurrency {args.concurrency}", result))
    return 0 if images_per_second(result) is not None and result["requests"] else 1


def read_images(given: list[str], count: int) -> list[tuple[str, bytes]]:
    paths = expand_paths(given)[:max(count, 1)]
    return [(p, open(p, "rb").read()) for p in paths]


if __name__ == "__main__":
    sys.exit(main())

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

    paths = expand_paths(args.images)[:max(args.batch_size * args.requests, 1)]
    images = [(p, open(p, "rb").read()) for p in paths]
    make = (lambda: ModelClient.grpc(args.grpc, args.model, batch_size=args.batch_size)) if args.grpc else \
        (lambda: ModelClient.rest(args.rest, args.model, batch_size=args.batch_size))
    with make() as warm:  # connect, and let the server's first request happen outside the timing
        warm.predict_bytes(images[:args.batch_size])

    latencies, errors, lock = [], [], threading.Lock()
    counter = iter(range(args.requests))
    deadline = time.monotonic() + args.seconds

    def worker():
        with make() as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                batch = [images[(i * args.batch_size + k) % len(images)] for k in range(args.batch_size)]
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
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if not latencies:
        print("no request completed")
        return 1
    ms = sorted(1000 * x for x in latencies)
    pct = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    transport = "gRPC" if args.grpc else "REST"
    print(f"{transport} {args.model}: {len(ms)} requests x {args.batch_size} image(s), concurrency {args.concurrency}, "
          f"{wall:.1f}s")
    print(f"  {len(ms) / wall:.1f} requests/s, {len(ms) * args.batch_size / wall:.1f} images/s, errors {len(errors)}")
    print(f"  latency ms: p50 {pct(0.5):.1f}  p90 {pct(0.9):.1f}  p99 {pct(0.99):.1f}  "
          f"mean {statistics.mean(ms):.1f}  max {ms[-1]:.1f}")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())

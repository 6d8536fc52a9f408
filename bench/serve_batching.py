"""Benchmark (not a test): server-side batching under 16 concurrent single-image gRPC clients.

    python bench/serve_batching.py --model-base-path /tmp/models --model cats_vs_dogs --images PHOTOS/

In one run: the in-process SavedModel (TF Serving's session path, model_api/session_bundle.py)
at each of --in-process-batches (the reference --in-process-batch, 32, among them; median of
interleaved rounds), then the
local server started twice (`python -m serving`, its own process), without and with
--enable_batching (serving/config/batching_parameters.txt unless --batching-parameters), each
loaded by --concurrency clients sending one image per request. Prints images/s and p50/p99
latency for each, and each server rate as a share of the in-process rate at the reference
batch and at the best batch measured. The clients never retry and only answered images
count; a server run with any error is printed as INVALID and compared with nothing (exit
status 1). Every request sends real files' bytes; only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.serve_throughput import bench_client, images_per_second, read_images, report, run_load  # noqa: E402
from model_api.versions import list_versions  # noqa: E402


def in_process_images_per_second(version_dir: str, images: list[bytes], batches: list[int],
                                 count: int, rounds: int = 3) -> dict[int, float]:
    """{batch size: median images/s} over `rounds` rounds of about `count` images per batch size, one
    bundle for all. The rounds interleave the batch sizes: on a shared machine a change of load then
    reaches every size alike, instead of making the last size measured look slow."""
    import statistics

    import numpy as np

    from model_api import signature as sig
    from model_api.session_bundle import SessionBundle

    bundle = SessionBundle(version_dir)
    feeds = {batch: [np.array([images[(r * batch + k) % len(images)] for k in range(batch)], dtype=object)
                     for r in range(max(1, count // batch))] for batch in batches}
    rates = {batch: [] for batch in batches}
    try:
        for batch in batches:
            bundle.run(sig.SERVING_DEFAULT, {sig.INPUT_IMAGE_BYTES: feeds[batch][0]})  # first run at a size
        for _ in range(rounds):
            for batch in batches:
                started = time.perf_counter()
                for feed in feeds[batch]:
                    bundle.run(sig.SERVING_DEFAULT, {sig.INPUT_IMAGE_BYTES: feed})
                rates[batch].append(batch * len(feeds[batch]) / (time.perf_counter() - started))
    finally:
        bundle.close()
    return {batch: statistics.median(values) for batch, values in rates.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, batching: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "serving", f"--port={port}", "--rest_api_port=0", f"--model_name={args.model}",
               f"--model_base_path={os.path.join(args.model_base_path, args.model)}",
               f"--grpc_max_threads={args.grpc_max_threads}", "--file_system_poll_wait_seconds=0"]
    if batching:
        command += ["--enable_batching", f"--batching_parameters_file={args.batching_parameters}"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    for line in process.stdout:
        if line.startswith("model-server ready"):
            return process, port
    raise RuntimeError(f"the server did not start (exit status {process.wait()})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-base-path", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", required=True, nargs="+", help="image files or folders")
    parser.add_argument("--requests", type=int, default=640, help="requests per server run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--in-process-batch", type=int, default=32,
                        help="the reference batch size (the >= 80%% target is against it); measured in any case")
    parser.add_argument("--in-process-batches", type=int, nargs="+", default=[1, 4, 8, 16, 32],
                        help="batch sizes to measure in process; the best of them is the other reference")
    parser.add_argument("--in-process-images", type=int, default=320,
                        help="images per in-process batch size and round (batch 32: 10 requests)")
    parser.add_argument("--in-process-rounds", type=int, default=3,
                        help="interleaved rounds over the batch sizes; the median rate is reported")
    parser.add_argument("--batching-parameters", default=os.path.join(REPO, "serving", "config",
                                                                      "batching_parameters.txt"))
    parser.add_argument("--grpc-max-threads", type=int, default=32,
                        help="server gRPC threads: at least --concurrency, or requests wait before batching")
    parser.add_argument("--seconds", type=float, default=600.0, help="cap per server run")
    args = parser.parse_args(argv)

    images = read_images(args.images, args.requests)
    versions = list_versions(os.path.join(args.model_base_path, args.model))
    if not versions:
        print(f"no version of {args.model} under {args.model_base_path}")
        return 2
    version_dir = os.path.join(args.model_base_path, args.model, str(versions[-1]))
    print(f"model {args.model} version {versions[-1]}, {len(images)} distinct images, {os.cpu_count()} CPUs",
          flush=True)

    batches = sorted(set(args.in_process_batches) | {args.in_process_batch})
    in_process = in_process_images_per_second(version_dir, [data for _, data in images], batches,
                                              args.in_process_images, args.in_process_rounds)
    for batch, rate in in_process.items():
        print(f"in-process signature, batch {batch}: {rate:.1f} images/s", flush=True)
    best = max(in_process, key=in_process.get)
    references = {f"batch {args.in_process_batch}": in_process[args.in_process_batch],
                  f"the best measured, batch {best}": in_process[best]}
    rates = {}
    for batching in (False, True):
        process, port = start_server(args, batching)
        try:
            result = run_load(lambda: bench_client(f"127.0.0.1:{port}", args.model, 1), images,
                              args.requests, args.concurrency, 1, args.seconds)
        finally:
            process.terminate()
            process.wait(timeout=60)
        label = f"gRPC, {args.concurrency} clients x 1 image, batching {'on' if batching else 'off'}"
        print(report(label, result), flush=True)
        rates[batching] = images_per_second(result)  # None: the run had errors
    for batching in (True, False):
        name = f"batching {'on' if batching else 'off'}"
        if rates[batching] is None:
            print(f"{name}: INVALID (errors), no rate to compare")
            continue
        shares = "; ".join(f"{100 * rates[batching] / rate:.0f}% of the in-process rate at {ref}"
                           for ref, rate in references.items())
        target = " (target >= 80% at the reference batch)" if batching else ""
        print(f"{name}: {rates[batching]:.1f} images/s = {shares}{target}")
    return 0 if None not in rates.values() else 1


if __name__ == "__main__":
    sys.exit(main())

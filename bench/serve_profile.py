"""Benchmark (not a test): where the served signature's time goes, against the bare network, in one run.

    python bench/serve_profile.py [--images PHOTOS/] [--weights none|PATH] [--rounds 3] [--no-server]
                                  [--intra-op 0 --inter-op 0] [--num-batch-threads 2]

One MobileNetV2 classifier (160 px, random weights unless --weights: speed does not depend on them)
exported with publishing/archive.py, then, at batch 1, 8 and 32, in rounds that interleave every case
(the machine is shared: a load change then hits all cases alike, not the last one measured):
- network:     the bare Keras forward on a float batch (tf.function), the reference rate;
- decode:      the signature's decode (header check + decode_image) alone, per image in a map_fn;
- preprocess:  decode + scale + resize alone (model_api/preprocess.py bytes_batch_to_input);
- net-session: `predict_images` (floats in) in TF Serving's session path (model_api/session_bundle.py);
- signature:   `serving_default` (encoded bytes in) in the same Session;
then the local server (`python -m serving --enable_batching`) answering --concurrency gRPC clients
sending requests of 1, 8 and 32 images. Each line gives the median images/s over the rounds and the
CPU milliseconds per image (user + system, all threads of the process measured), which contention
changes far less than the wall rate. Only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench.tta_latency import folder_images, synthetic_jpegs  # noqa: E402

BATCHES = (1, 8, 32)
IMG_SIZE = 160


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(run, images_per_call: int, min_images: int) -> tuple[float, float]:
    """(images/s, CPU ms per image) of calling `run` until at least `min_images` images ran."""
    calls = max(2, -(-min_images // images_per_call))
    wall, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(calls):
        run()
    count = calls * images_per_call
    return count / (time.perf_counter() - wall), 1000 * (cpu_seconds() - cpu) / count


def in_process_cases(model, bundle, jpegs: list[bytes], batch: int) -> dict:
    """name -> a no-argument call running that piece on one batch of `batch` images."""
    import numpy as np
    import tensorflow as tf

    from model_api import signature as sig
    from model_api.preprocess import bytes_batch_to_input, decode_checked

    floats = np.random.default_rng(batch).uniform(-1, 1, (batch, IMG_SIZE, IMG_SIZE, 3)).astype(np.float32)
    encoded = np.array([jpegs[i % len(jpegs)] for i in range(batch)], dtype=object)
    forward = tf.function(lambda x: model(x, training=False))
    decode = tf.function(lambda b: tf.map_fn(lambda one: tf.shape(decode_checked(one)), b,
                                             fn_output_signature=tf.TensorSpec([3], tf.int32)))
    preprocess = tf.function(lambda b: bytes_batch_to_input(b, IMG_SIZE))
    return {"network": lambda: forward(floats).numpy(),
            "decode": lambda: decode(tf.constant(encoded)).numpy(),
            "preprocess": lambda: preprocess(tf.constant(encoded)).numpy(),
            "net-session": lambda: bundle.run(sig.PREDICT_IMAGES, {sig.INPUT_IMAGES: floats}),
            "signature": lambda: bundle.run(sig.SERVING_DEFAULT, {sig.INPUT_IMAGE_BYTES: encoded})}


def profile_in_process(model, bundle, jpegs: list[bytes], rounds: int, min_images: int) -> dict:
    """{(case, batch): [(images/s, cpu ms/img) per round]}, every case and batch once per round."""
    cases = {batch: in_process_cases(model, bundle, jpegs, batch) for batch in BATCHES}
    for batch_cases in cases.values():
        for run in batch_cases.values():
            run()  # traces and first-run allocations outside the timing
    results = {}
    for round_number in range(rounds):
        for batch, batch_cases in cases.items():
            for name, run in batch_cases.items():
                results.setdefault((name, batch), []).append(measure(run, batch, min_images))
        print(f"  round {round_number + 1}/{rounds} done", flush=True)
    return results


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of another process (Linux /proc), None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def profile_server(args, base_path: str, jpegs: list[bytes]) -> dict:
    """{("server", batch): [(images/s, server CPU ms/img) per round]} through gRPC with --enable_batching."""
    from bench.serve_batching import start_server
    from bench.serve_throughput import bench_client, images_per_second, report, run_load

    parameters = os.path.join(base_path, "batching_parameters.txt")
    with open(parameters, "w") as f:  # serving/config/batching_parameters.txt's values, threads as given
        f.write(f"max_batch_size {{ value: {max(BATCHES)} }}\nbatch_timeout_micros {{ value: 0 }}\n"
                f"num_batch_threads {{ value: {args.num_batch_threads} }}\nmax_enqueued_batches {{ value: 64 }}\n")
    server_args = argparse.Namespace(model="profiled", model_base_path=base_path, batching_parameters=parameters,
                                     grpc_max_threads=max(32, args.concurrency))
    images = [(f"image-{i}.jpg", data) for i, data in enumerate(jpegs)]
    results = {}
    # The server's TensorFlow pools sized as this process's: TensorFlow reads these variables when it
    # creates them, as --tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism would.
    os.environ.update(TF_NUM_INTRAOP_THREADS=str(args.intra_op), TF_NUM_INTEROP_THREADS=str(args.inter_op))
    process, port = start_server(server_args, batching=True)
    try:
        for round_number in range(args.rounds):
            for batch in BATCHES:
                requests = max(args.concurrency * 2, -(-args.min_images // batch))
                cpu = process_cpu_seconds(process.pid)
                result = run_load(lambda: bench_client(f"127.0.0.1:{port}", "profiled", batch), images,
                                  requests, args.concurrency, batch, args.seconds)
                used = process_cpu_seconds(process.pid)
                rate = images_per_second(result)
                if rate is None:
                    print("  " + report(f"server batch {batch}", result), flush=True)
                    continue
                per_image = 1000 * (used - cpu) / result["images"] if None not in (cpu, used) else float("nan")
                results.setdefault(("server", batch), []).append((rate, per_image))
            print(f"  server round {round_number + 1}/{args.rounds} done", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=60)
    return results


def table(results: dict, cases: list[str]) -> str:
    """Median images/s and CPU ms/image per case and batch, and the share of the network's rate."""
    lines = [f"{'case':<12}" + "".join(f" | batch {b:>2}: img/s  cpu-ms/img  %net" for b in BATCHES)]
    for name in cases:
        cells = []
        for batch in BATCHES:
            runs = results.get((name, batch))
            if not runs:
                cells.append(f" | {'-':>29}")
                continue
            rate = statistics.median(r for r, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            network = statistics.median(r for r, _ in results[("network", batch)])
            cells.append(f" | {rate:>16.1f}  {cpu:>10.2f}  {100 * rate / network:>3.0f}")
        lines.append(f"{name:<12}" + "".join(cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", help="folder of JPEG/PNG photos (default: synthetic 500x375 JPEGs)")
    parser.add_argument("--weights", default="none", help="'none' (random, default), 'imagenet' or a weights file")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--min-images", type=int, default=96, help="images per case, batch and round")
    parser.add_argument("--intra-op", type=int, default=0, help="intra-op threads (0: one per core)")
    parser.add_argument("--inter-op", type=int, default=0, help="inter-op threads (0: one per core)")
    parser.add_argument("--no-server", action="store_true", help="skip the local-server rows")
    parser.add_argument("--concurrency", type=int, default=4, help="gRPC clients against the local server")
    parser.add_argument("--num-batch-threads", type=int, default=2, help="the server's batching threads")
    parser.add_argument("--seconds", type=float, default=300.0, help="cap per server load run")
    args = parser.parse_args(argv)

    from model_api.session_bundle import SessionBundle, set_process_threads, thread_config

    set_process_threads(args.intra_op, args.inter_op)  # before TensorFlow runs anything: see thread_config
    from publishing import archive
    from training.model import build_classifier

    jpegs = folder_images(args.images, 64) if args.images else synthetic_jpegs(32)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {len(jpegs)} distinct images, "
          f"intra-op {args.intra_op}, inter-op {args.inter_op}, server: {args.num_batch_threads} batch threads, "
          f"{args.concurrency} clients", flush=True)
    model = build_classifier(2, IMG_SIZE, args.weights).model
    with tempfile.TemporaryDirectory() as work:
        version_dir = os.path.join(work, "profiled", "1")
        archive.build_archive(model, ["cat", "dog"], IMG_SIZE).write_out(version_dir, verbose=False)
        bundle = SessionBundle(version_dir, session_config=thread_config(args.intra_op, args.inter_op))
        try:
            results = profile_in_process(model, bundle, jpegs, args.rounds, args.min_images)
        finally:
            bundle.close()
        if not args.no_server:
            results.update(profile_server(args, work, jpegs))
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}; medians of {args.rounds} interleaved rounds")
    print(table(results, ["network", "decode", "preprocess", "net-session", "signature", "server"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

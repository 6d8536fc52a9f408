"""predict: classify image files with a model served by TF Serving or the local server.

    predict --grpc localhost:8500 --model cats_vs_dogs cat.jpg photos/
    predict --rest http://localhost:8501 --model cats_vs_dogs --jsonl photos/ > results.jsonl
    predict status   --grpc localhost:8500 --model cats_vs_dogs
    predict metadata --rest http://localhost:8501 --model cats_vs_dogs

Exit status: 0 if every image was classified, 1 if any failed, 2 if the call itself failed.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter

from client.api import ModelClient, expand_paths
from client.results import Prediction, ServerError


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--grpc", metavar="HOST:PORT", help="TF Serving gRPC address, e.g. localhost:8500")
    where.add_argument("--rest", metavar="URL", help="TF Serving REST base URL, e.g. http://localhost:8501")
    parser.add_argument("--model", required=True, help="model name")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="a specific model version (default: the latest)")
    which.add_argument("--label", help="a version label from the server's models.config, e.g. stable")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")
    parser.add_argument("--retries", type=int, default=3, help="retries when the server is unavailable (default 3)")
    parser.add_argument("--wait-for-ready", action="store_true", help="gRPC: wait for the server to come up")
    parser.add_argument("--tls-ca", metavar="PEM", help="trust this root certificate (gRPC TLS or HTTPS)")
    parser.add_argument("--tls-cert", metavar="PEM", help="client certificate (mTLS)")
    parser.add_argument("--tls-key", metavar="PEM", help="client private key (mTLS)")
    parser.add_argument("--tls-server-name", help="gRPC: expected name in the server certificate")
    parser.add_argument("--compression", choices=("gzip", "deflate"), help="gRPC message compression")


def build_parser(command: str) -> argparse.ArgumentParser:
    if command in ("status", "metadata"):
        parser = argparse.ArgumentParser(prog=f"predict {command}",
                                         description=f"Show the model's {command} as the server reports it.")
        _connection_arguments(parser)
        return parser
    parser = argparse.ArgumentParser(prog="predict", description=__doc__.split("\n\n")[0],
                                     epilog="Subcommands: predict status ..., predict metadata ...",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _connection_arguments(parser)
    parser.add_argument("paths", nargs="+", help="image files and directories (searched recursively)")
    parser.add_argument("--signature", help="signature name (default serving_default)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per request (default 16)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (default 4)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON array of results")
    output.add_argument("--jsonl", action="store_true", help="one JSON object per line per image")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", action="store_true", default=None, help="always show a progress bar")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show one")
    return parser


def _client(args, batch_size=16, concurrency=1) -> ModelClient:
    options = dict(version=args.version, label=args.label, timeout=args.timeout, retries=args.retries,
                   wait_for_ready=args.wait_for_ready, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                   tls_key=args.tls_key, tls_server_name=args.tls_server_name, compression=args.compression,
                   signature=getattr(args, "signature", None))
    if args.grpc:
        return ModelClient.grpc(args.grpc, args.model, batch_size, concurrency, **options)
    return ModelClient.rest(args.rest, args.model, batch_size, concurrency, **options)


def _print_table(results: list[Prediction], out) -> None:
    width = min(max([len(r.source) for r in results] + [6]), 70)
    print(f"{'source':<{width}}  {'label':<12} {'prob':>6}  {'version':>7}", file=out)
    for r in results:
        source = r.source if len(r.source) <= width else "…" + r.source[-width + 1:]
        if r.ok:
            print(f"{source:<{width}}  {r.label:<12} {r.probability:6.3f}  {r.version or '-':>7}", file=out)
        else:
            print(f"{source:<{width}}  {'ERROR':<12} {'':>6}  {'':>7}  {r.error}", file=out)


def classify(args) -> int:
    paths = expand_paths(args.paths)
    if not paths:
        print("error: no image files found in " + " ".join(args.paths), file=sys.stderr)
        return 2
    show_progress = args.progress if args.progress is not None else (len(paths) > 1 and sys.stderr.isatty())
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), unit="img", file=sys.stderr, desc="classifying")
    started = [time.perf_counter()]
    output_lock = threading.Lock()  # batches finish on several threads

    def done(batch):
        with output_lock:
            if bar:
                bar.update(len(batch))
            if args.jsonl:  # stream: a line per image as soon as its batch is answered
                for p in batch:
                    print(json.dumps(p.to_dict()), flush=True)

    try:
        with _client(args, args.batch_size, args.concurrency) as client:
            started[0] = time.perf_counter()  # after connecting (and importing TensorFlow for gRPC)
            results = client.predict_files(paths, on_done=done)
    except ServerError as err:
        if bar:
            bar.close()
        print(f"error: {err.code}: {err.message}", file=sys.stderr)
        return 2
    if bar:
        bar.close()
    seconds = max(time.perf_counter() - started[0], 1e-9)
    if args.json:
        print(json.dumps([p.to_dict() for p in results], indent=2))
    elif not args.jsonl:
        _print_table(results, sys.stdout)
    failed = [r for r in results if not r.ok]
    counts = Counter(r.label for r in results if r.ok)
    summary = ", ".join(f"{label} {n}" for label, n in counts.most_common())
    print(f"{len(results) - len(failed)} of {len(results)} images classified in {seconds:.1f}s "
          f"({len(results) / seconds:.1f} images/s): {summary or 'none'}; {len(failed)} failed", file=sys.stderr)
    return 1 if failed else 0


def show(command: str, args) -> int:
    try:
        with _client(args) as client:
            if command == "status":
                for s in client.status():
                    detail = "" if s.error_code == "OK" else f"  {s.error_code}: {s.error_message}"
                    print(f"{args.model}  version {s.version}  {s.state}{detail}")
            else:
                print(json.dumps(client.metadata(), indent=2))
    except ServerError as err:
        print(f"error: {err.code}: {err.message}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in ("status", "metadata") else "classify"
    args = build_parser(command).parse_args(argv[1:] if command != "classify" else argv)
    return classify(args) if command == "classify" else show(command, args)


if __name__ == "__main__":
    sys.exit(main())

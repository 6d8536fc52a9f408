"""The predict command line's arguments (connection, batching, evaluate and compare) and what they
build: the ModelClient and the progress bar. Usage and exit statuses: docs/client.md."""
from __future__ import annotations

import argparse
import sys

from client.api import ModelClient
from client.batching import DEFAULT_BATCH_SIZE, DEFAULT_MAX_REQUEST_BYTES
from client.evaluation.compare import ALPHA

DESCRIPTION = "predict: classify image files with a model served by TF Serving or the local server."


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--grpc", metavar="HOST:PORT",
                       help="TF Serving gRPC address, e.g. localhost:8500; dns:///NAME:PORT spreads requests "
                            "round-robin over every address NAME resolves to (a headless Service's pods)")
    where.add_argument("--rest", metavar="URL", type=_rest_url,
                       help="TF Serving REST base URL, e.g. http://localhost:8501")
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


def _batching_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--signature", help="signature name (default serving_default)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"images per request (default {DEFAULT_BATCH_SIZE}, within the shipped TF Serving "
                             "batching config's max_batch_size)")
    parser.add_argument("--max-request-bytes", type=_byte_count, default=DEFAULT_MAX_REQUEST_BYTES, metavar="N",
                        help=f"most bytes per request as sent (gRPC message, REST body with base64), e.g. 32M "
                             f"(default {DEFAULT_MAX_REQUEST_BYTES >> 20}M, under the server's 64 MiB "
                             "--max_request_bytes); a bigger image fails alone, unsent")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (default 4)")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", action="store_true", default=None, help="always show a progress bar")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show one")


def _rest_url(text: str) -> str:
    """A base URL with its scheme: without one, requests fails later with "No connection adapters"."""
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r} (e.g. http://{text.split('://')[-1]})")
    return text


def _byte_count(text: str) -> int:
    """N, NK, NM or NG (powers of 1024) -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    number, unit = (text[:-1], units[text[-1].upper()]) if text[-1:].upper() in units else (text, 1)
    try:
        value = int(float(number) * unit)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"not a byte count: {text!r} (e.g. 50000000, 512K, 32M)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte: {text!r}")
    return value


def _evaluation_parser(command: str, description: str) -> argparse.ArgumentParser:
    """What evaluate and compare share: the labelled folder, the connection, batching and --output."""
    parser = argparse.ArgumentParser(prog=f"predict {command}", description=description)
    parser.add_argument("dir", metavar="DIR", help="labelled photos: one sub-folder per class, as for train-job")
    _connection_arguments(parser)
    _batching_arguments(parser)
    parser.add_argument("--output", metavar="DIR",
                        help="folder for report.json, the figures and predictions.jsonl "
                             "(default: a new folder named for the model, version and time)")
    return parser


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = _evaluation_parser(
        "evaluate", "Classify every photo of a labelled folder through the server and report accuracy (95% "
                    "Wilson interval), per-class precision/recall/F1, the confusion matrix and the calibration "
                    "error; images the server refuses are listed apart.")
    parser.add_argument("--min-accuracy", type=float, metavar="X", help="exit 1 if the accuracy is below X")
    return parser


def _compare_parser() -> argparse.ArgumentParser:
    parser = _evaluation_parser(
        "compare", "Classify a labelled folder with two versions of a model (the baseline: --version/--label, "
                   "default the latest; the candidate: --against/--against-version) and compare them: "
                   "agreement, accuracy of each and McNemar's exact test on the images only one got right.")
    against = parser.add_mutually_exclusive_group(required=True)
    against.add_argument("--against", metavar="LABEL", help="the candidate's version label, e.g. canary")
    against.add_argument("--against-version", type=int, metavar="N", help="the candidate's version number")
    parser.add_argument("--require-not-worse", action="store_true",
                        help="exit 1 if the candidate is significantly less accurate or refuses images the "
                             "baseline answers")
    parser.add_argument("--alpha", type=float, default=ALPHA, help=f"significance level (default {ALPHA})")
    return parser


def build_parser(command: str) -> argparse.ArgumentParser:
    if command in ("status", "metadata"):
        parser = argparse.ArgumentParser(prog=f"predict {command}",
                                         description=f"Show the model's {command} as the server reports it.")
        _connection_arguments(parser)
        return parser
    if command == "evaluate":
        return _evaluate_parser()
    if command == "compare":
        return _compare_parser()
    parser = argparse.ArgumentParser(prog="predict", description=DESCRIPTION,
                                     epilog="Subcommands: predict status|metadata|evaluate|compare ... "
                                            "(predict SUBCOMMAND --help)",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _connection_arguments(parser)
    parser.add_argument("paths", nargs="+", help="image files and directories (searched recursively)")
    _batching_arguments(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON array of results")
    output.add_argument("--jsonl", action="store_true", help="one JSON object per line per image")
    return parser


def connect(args, batch_size=DEFAULT_BATCH_SIZE, concurrency=1) -> ModelClient:
    options = dict(version=args.version, label=args.label, timeout=args.timeout, retries=args.retries,
                   wait_for_ready=args.wait_for_ready, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                   tls_key=args.tls_key, tls_server_name=args.tls_server_name, compression=args.compression,
                   signature=getattr(args, "signature", None))
    budget = getattr(args, "max_request_bytes", DEFAULT_MAX_REQUEST_BYTES)  # status/metadata send no images
    if args.grpc:
        return ModelClient.grpc(args.grpc, args.model, batch_size, concurrency, budget, **options)
    return ModelClient.rest(args.rest, args.model, batch_size, concurrency, budget, **options)


def progress_bar(args, total: int, description: str):
    """A tqdm bar on stderr (--progress / --no-progress; by default when stderr is a terminal)."""
    show = args.progress if args.progress is not None else (total > 1 and sys.stderr.isatty())
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, desc=description)

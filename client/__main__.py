"""predict: classify image files with a model served by TF Serving or the local server.

    predict --grpc localhost:8500 --model cats_vs_dogs cat.jpg photos/
    predict --rest http://localhost:8501 --model cats_vs_dogs --jsonl photos/ > results.jsonl
    predict status   --grpc localhost:8500 --model cats_vs_dogs
    predict metadata --rest http://localhost:8501 --model cats_vs_dogs
    predict evaluate photos/ --grpc localhost:8500 --model cats_vs_dogs --label canary --min-accuracy 0.9
    predict compare  photos/ --grpc localhost:8500 --model cats_vs_dogs --label stable --against canary

Exit status: 0 if every image was classified, 1 if any failed, 2 if the call itself failed.
evaluate: 1 if the accuracy is below --min-accuracy; compare: 1 if --require-not-worse and the
candidate is worse; 2 if the evaluation could not run (the folder, the model's classes, the server).
Any other failure (an unreadable --tls-* file, an answer in an unexpected form) is one
`error: ...` line and exit 2, never 1, which only ever means the images or the gate; 130 when
interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter

from client.api import ModelClient, expand_paths
from client.batching import DEFAULT_BATCH_SIZE, DEFAULT_MAX_REQUEST_BYTES
from client.evaluation.compare import ALPHA
from client.evaluation.folder import EvaluationError
from client.results import Prediction, ServerError


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--grpc", metavar="HOST:PORT",
                       help="TF Serving gRPC address, e.g. localhost:8500; dns:///NAME:PORT spreads requests "
                            "round-robin over every address NAME resolves to (a headless Service's pods)")
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


def _evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="labelled photos: one sub-folder per class, as for train-job")
    _connection_arguments(parser)
    _batching_arguments(parser)
    parser.add_argument("--output", metavar="DIR",
                        help="folder for report.json, the figures and predictions.jsonl "
                             "(default: a new folder named for the model, version and time)")


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict evaluate",
        description="Classify every photo of a labelled folder through the server and report accuracy (95% "
                    "Wilson interval), per-class precision/recall/F1, the confusion matrix and the calibration "
                    "error; images the server refuses are listed apart.")
    _evaluation_arguments(parser)
    parser.add_argument("--min-accuracy", type=float, metavar="X", help="exit 1 if the accuracy is below X")
    return parser


def _compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict compare",
        description="Classify a labelled folder with two versions of a model (the baseline: --version/--label, "
                    "default the latest; the candidate: --against/--against-version) and compare them: "
                    "agreement, accuracy of each and McNemar's exact test on the images only one got right.")
    _evaluation_arguments(parser)
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
    parser = argparse.ArgumentParser(prog="predict", description=__doc__.split("\n\n")[0],
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


def _client(args, batch_size=DEFAULT_BATCH_SIZE, concurrency=1) -> ModelClient:
    options = dict(version=args.version, label=args.label, timeout=args.timeout, retries=args.retries,
                   wait_for_ready=args.wait_for_ready, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                   tls_key=args.tls_key, tls_server_name=args.tls_server_name, compression=args.compression,
                   signature=getattr(args, "signature", None))
    budget = getattr(args, "max_request_bytes", DEFAULT_MAX_REQUEST_BYTES)  # status/metadata send no images
    if args.grpc:
        return ModelClient.grpc(args.grpc, args.model, batch_size, concurrency, budget, **options)
    return ModelClient.rest(args.rest, args.model, batch_size, concurrency, budget, **options)


def _print_table(results: list[Prediction], out) -> None:
    width = min(max([len(r.source) for r in results] + [6]), 70)
    print(f"{'source':<{width}}  {'label':<12} {'prob':>6}  {'version':>7}", file=out)
    for r in results:
        source = r.source if len(r.source) <= width else "…" + r.source[-width + 1:]
        if r.ok:
            print(f"{source:<{width}}  {r.label:<12} {r.probability:6.3f}  {r.version or '-':>7}", file=out)
        else:
            print(f"{source:<{width}}  {'ERROR':<12} {'':>6}  {'':>7}  {r.error}", file=out)


def _progress_bar(args, total: int, description: str):
    """A tqdm bar on stderr (--progress / --no-progress; by default when stderr is a terminal)."""
    show = args.progress if args.progress is not None else (total > 1 and sys.stderr.isatty())
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, desc=description)


def classify(args) -> int:
    paths = expand_paths(args.paths)
    if not paths:
        print("error: no image files found in " + " ".join(args.paths), file=sys.stderr)
        return 2
    bar = _progress_bar(args, len(paths), "classifying")
    started = [time.perf_counter()]
    output_lock = threading.Lock()  # batches finish on several threads

    def done(batch):
        with output_lock:
            if bar:
                bar.update(len(batch))
            if args.jsonl:  # stream: a line per image as soon as its batch is answered
                for p in batch:
                    print(json.dumps(p.to_dict()), flush=True)

    error = None
    try:
        with _client(args, args.batch_size, args.concurrency) as client:
            started[0] = time.perf_counter()  # after connecting (and importing TensorFlow for gRPC)
            results = client.predict_files(paths, on_done=done)
    except ServerError as err:
        error = f"error: {err.code}: {err.message}"
    finally:  # any other failure too: main() prints it after the bar is gone
        if bar:
            bar.close()
    if error:
        print(error, file=sys.stderr)
        return 2
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


# --- evaluate and compare -----------------------------------------------------------------

def _target(args):
    from client.evaluation.outputs import Target

    return Target("grpc" if args.grpc else "rest", args.grpc or args.rest, args.model, args.version, args.label)


def _candidate_args(args) -> argparse.Namespace:
    """compare's candidate: the same connection, --against/--against-version for the version."""
    return argparse.Namespace(**{**vars(args), "version": args.against_version, "label": args.against})


def _run_evaluation(args, total: int, run):
    """Run `run(on_done)` with a progress bar; None (after one error line) if it failed."""
    bar = _progress_bar(args, total, args.command)
    lock = threading.Lock()

    def done(batch):
        if bar:
            with lock:
                bar.update(len(batch))

    try:
        return run(done)
    except EvaluationError as err:
        print(f"error: {err}", file=sys.stderr)
    except ServerError as err:
        print(f"error: {err.code}: {err.message}", file=sys.stderr)
    finally:
        if bar:
            bar.close()
    return None


def _write_outputs(write, directory: str) -> bool:
    try:
        files = write(directory)
    except (EvaluationError, OSError) as err:
        print(f"error: cannot write the outputs: {err}", file=sys.stderr)
        return False
    print(f"wrote {os.path.join(directory, '')}: {', '.join(files)}", file=sys.stderr)
    return True


def _labelled_folder(args):
    """The folder to evaluate, once --output is known to be free; None after an error line."""
    from client.evaluation.folder import read_labelled_folder
    from client.evaluation.outputs import prepare_output_dir

    try:
        folder = read_labelled_folder(args.dir)
        if args.output:
            prepare_output_dir(args.output)  # refuse before classifying, not after
    except EvaluationError as err:
        print(f"error: {err}", file=sys.stderr)
        return None
    return folder


def evaluate_command(args) -> int:
    from client.evaluation import evaluate

    folder = _labelled_folder(args)
    if folder is None:
        return 2

    def run(done):
        with _client(args, args.batch_size, args.concurrency) as client:
            evaluation = evaluate.evaluate(client, folder, _target(args), args.signature, done)
        evaluate.require_answers(evaluation)  # nothing answered: exit 2, not 0
        return evaluation

    evaluation = _run_evaluation(args, len(folder.files), run)
    if evaluation is None:
        return 2
    document = evaluate.report(evaluation, args.min_accuracy)
    print("\n".join(evaluate.summary(document, evaluate.title(evaluation))))
    directory = args.output or evaluate.default_output_dir(evaluation)
    if not _write_outputs(lambda d: evaluate.write(evaluation, document, d), directory):
        return 2
    gate = document.get("min_accuracy")
    if gate and not gate["passed"]:
        accuracy = document["accuracy"]["value"]
        print(f"accuracy {'none' if accuracy is None else f'{accuracy:.4f}'} is below --min-accuracy "
              f"{args.min_accuracy}", file=sys.stderr)
        return 1
    return 0


def compare_command(args) -> int:
    from client.evaluation import compare

    folder = _labelled_folder(args)
    if folder is None:
        return 2
    candidate_args = _candidate_args(args)

    def run(done):
        with _client(args, args.batch_size, args.concurrency) as baseline, \
                _client(candidate_args, args.batch_size, args.concurrency) as candidate:
            return compare.compare(baseline, candidate, folder, _target(args), _target(candidate_args),
                                   args.signature, done)

    comparison = _run_evaluation(args, 2 * len(folder.files), run)
    if comparison is None:
        return 2
    document = compare.report(comparison, args.alpha)
    print("\n".join(compare.summary(document, comparison.baseline.target.describe(comparison.baseline.served.version),
                                     comparison.candidate.target.describe(comparison.candidate.served.version))))
    directory = args.output or compare.default_output_dir(comparison)
    if not _write_outputs(lambda d: compare.write(comparison, document, d), directory):
        return 2
    if args.require_not_worse and document["verdict"]["candidate_worse"]:
        print(f"the candidate is worse: {document['verdict']['text']}", file=sys.stderr)
        return 1
    return 0


COMMANDS = ("status", "metadata", "evaluate", "compare")


def _one_line(err: Exception) -> str:
    """What went wrong, in one line and without a traceback."""
    if isinstance(err, KeyError):  # str() of a KeyError is only the quoted key
        return f"missing {err.args[0]!r} (an answer in an unexpected form?)" if err.args else "missing key"
    if isinstance(err, ValueError) and type(err).__name__ == "JSONDecodeError":  # json's, requests', simplejson's
        return f"an answer is not JSON ({err})"
    text = " ".join(str(err).split())
    return text or err.__class__.__name__


def _run(argv) -> int:
    command = argv[0] if argv and argv[0] in COMMANDS else "classify"
    args = build_parser(command).parse_args(argv[1:] if command != "classify" else argv)
    args.command = command
    if command == "evaluate":
        return evaluate_command(args)
    if command == "compare":
        return compare_command(args)
    return classify(args) if command == "classify" else show(command, args)


def main(argv=None) -> int:
    """Exit 1 means failed images or a failed gate (a Job's podFailurePolicy relies on it), so
    every unforeseen failure is one error line and exit 2 instead of a traceback and 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the exit status must not say "gate failed"
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""predict: classify image files (and status, metadata, evaluate, compare) through TF Serving or the local
server; exit 1 only for failed images or a failed gate. Usage and exit statuses: docs/client.md."""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter

from client import cli_args, cli_evaluate
from client.api import expand_paths
from client.results import Prediction, ServerError


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
    bar = cli_args.progress_bar(args, len(paths), "classifying")
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
        with cli_args.connect(args, args.batch_size, args.concurrency) as client:
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
        with cli_args.connect(args) as client:
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
    args = cli_args.build_parser(command).parse_args(argv[1:] if command != "classify" else argv)
    args.command = command
    if command == "evaluate":
        return cli_evaluate.evaluate_command(args)
    if command == "compare":
        return cli_evaluate.compare_command(args)
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

"""predict evaluate and predict compare: classify a labelled folder through the server, report, write
the outputs and apply the gate (--min-accuracy, --require-not-worse). See docs/client.md."""
from __future__ import annotations

import argparse
import os
import sys
import threading

from client import cli_args
from client.evaluation.folder import EvaluationError
from client.results import ServerError


def _target(args):
    from client.evaluation.outputs import Target

    return Target("grpc" if args.grpc else "rest", args.grpc or args.rest, args.model, args.version, args.label)


def _candidate_args(args) -> argparse.Namespace:
    """compare's candidate: the same connection, --against/--against-version for the version."""
    return argparse.Namespace(**{**vars(args), "version": args.against_version, "label": args.against})


def _run_evaluation(args, total: int, run):
    """Run `run(on_done)` with a progress bar; None (after one error line) if it failed."""
    bar = cli_args.progress_bar(args, total, args.command)
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
        with cli_args.connect(args, args.batch_size, args.concurrency) as client:
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
        with cli_args.connect(args, args.batch_size, args.concurrency) as baseline, \
                cli_args.connect(candidate_args, args.batch_size, args.concurrency) as candidate:
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

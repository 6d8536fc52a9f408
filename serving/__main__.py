"""model-server: a TF-Serving-compatible development server for machines without Docker.

Started like tensorflow_model_server, with the same flag names for what they share:

    model-server --model_name=NAME --model_base_path=/models/NAME
    model-server --model_config_file=serving/config/models.config

gRPC (PredictionService.Predict / GetModelMetadata, ModelService.GetModelStatus /
HandleReloadConfigRequest, optionally grpc.health.v1.Health) on --port, TF Serving's REST API
(and, with --monitoring_config_file, its Prometheus page) on --rest_api_port. For production, run TensorFlow Serving
(Dockerfile.serve) and scale with replicas; this server is for development and tests.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

from model_api.versions import is_url


def tf_bool(text: str) -> bool:
    """A boolean flag's value as tensorflow_model_server reads it (tensorflow/core/util/command_line_flags.h,
    now third_party/xla/xla/tsl/util/command_line_flags.cc ParseBoolFlag): true or false in any case
    (absl::EqualsIgnoreCase), 1 or 0; anything else is a usage error."""
    if text.lower() == "true" or text == "1":
        return True
    if text.lower() == "false" or text == "0":
        return False
    raise argparse.ArgumentTypeError(f"Couldn't interpret value {text!r}: use true, false (any case), 1 or 0")


def _bool_flag(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    # `--name` alone means true, as in TF's flags; `--name=false` turns it off.
    parser.add_argument(name, type=tf_bool, nargs="?", const=True, default=default, metavar="true|false",
                        help=help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="model-server", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--port", type=int, default=8500,
                        help="gRPC port. 0 is refused, as in TF Serving (which would need --grpc_socket_path).")
    parser.add_argument("--rest_api_port", type=int, default=8501, help="REST port (0 disables REST).")
    parser.add_argument("--host", default="127.0.0.1",
                        help="Address to bind; 0.0.0.0 to accept other machines (TF Serving binds all).")
    parser.add_argument("--model_name", default="default", help="Model name with --model_base_path.")
    parser.add_argument("--model_base_path", default=None, help="Folder of integer-named versions.")
    parser.add_argument("--model_config_file", default=None, help="TF Serving ModelServerConfig (text format).")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                        help="How often to look for new versions (0: only at start).")
    _bool_flag(parser, "--enable_model_warmup", True,
               "Replay assets.extra/tf_serving_warmup_requests before serving a version.")
    _bool_flag(parser, "--enable_batching", False, "Batch requests server-side (--batching_parameters_file).")
    parser.add_argument("--batching_parameters_file", default="",
                        help="TF Serving BatchingParameters (text format); needs --enable_batching.")
    _bool_flag(parser, "--allow_version_labels_for_unavailable_models", False,
               "Accept version labels that point at versions not loaded (yet).")
    parser.add_argument("--max_num_load_retries", type=int, default=5,
                        help="Retries of a version that failed to load.")
    parser.add_argument("--load_retry_interval_micros", type=int, default=60_000_000,
                        help="Wait between load retries, in microseconds.")
    parser.add_argument("--ssl_config_file", default=None, help="TF Serving SSLConfig (text format) for gRPC TLS.")
    parser.add_argument("--max_request_bytes", type=int, default=64 << 20,
                        help="Largest gRPC message or REST body accepted.")
    cpus = os.cpu_count() or 1  # server.h: 4 x NumSchedulableCPUs for both
    parser.add_argument("--grpc_max_threads", type=int, default=4 * cpus, help="gRPC worker threads.")
    parser.add_argument("--rest_api_num_threads", type=int, default=4 * cpus, help="REST worker threads.")
    parser.add_argument("--grace_seconds", type=float, default=30.0,
                        help="How long SIGTERM waits for requests (gRPC and REST drain together).")
    parser.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                        help="A REST predict not answered by then gets 504 DEADLINE_EXCEEDED (0: no timeout).")
    parser.add_argument("--rest_api_max_concurrent_requests", type=int, default=0,
                        help="REST requests in flight beyond this get 429 at once (0: --rest_api_num_threads). "
                             "Not a TF Serving flag: its gRPC limit is --grpc_max_threads.")
    parser.add_argument("--monitoring_config_file", default=None,
                        help="TF Serving MonitoringConfig (text format); prometheus_config serves metrics on REST.")
    _bool_flag(parser, "--enable_grpc_healthcheck_service", False,
               "The standard grpc.health.v1.Health service on the gRPC port.")
    parser.add_argument("--model_config_file_poll_wait_seconds", type=int, default=0,
                        help="Re-read --model_config_file this often and apply changes (0: read once).")
    for name, what in (("session", "TensorFlow session threads (both pools)"),
                       ("intra_op", "Threads to parallelize one op"),
                       ("inter_op", "Ops run at the same time")):
        parser.add_argument(f"--tensorflow_{name}_parallelism", type=int, default=0,
                            help=f"{what}; 0: TensorFlow chooses.")
    return parser


def configure_tf_threads(args) -> None:
    """server.cc: the session parallelism, or intra/inter-op separately, never all three."""
    session, intra, inter = (args.tensorflow_session_parallelism, args.tensorflow_intra_op_parallelism,
                             args.tensorflow_inter_op_parallelism)
    if intra > 0 and inter > 0 and session > 0:
        raise ValueError("Either configure server_options.tensorflow_session_parallelism or "
                         "(server_options.tensorflow_intra_op_parallelism, "
                         "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all.")
    if not (intra > 0 or inter > 0):
        intra = inter = session
    if intra <= 0 and inter <= 0:
        return  # TensorFlow chooses, as with no flag
    from model_api.session_bundle import set_process_threads

    # Before any model loads: TensorFlow sizes its pools once per process (per session in TF Serving).
    try:
        set_process_threads(max(intra, 0), max(inter, 0))
    except RuntimeError as err:  # only in-process, once TensorFlow has run something
        raise ValueError(f"--tensorflow_*_parallelism: {err}") from None


def _batching_options(args):
    """server.cc: BatchingParameters from the file (or the defaults) when --enable_batching."""
    from serving.batching import BatchingOptions
    from serving.config_protos import BatchingParameters, parse_text_file

    if not args.enable_batching:
        if args.batching_parameters_file:
            raise ValueError("server_options.batching_parameters_file is set without setting "
                             "server_options.enable_batching to true.")
        return None
    params = (parse_text_file(args.batching_parameters_file, BatchingParameters) if args.batching_parameters_file
              else BatchingParameters())
    return BatchingOptions.from_proto(params)


def absolute_base_path(path: str) -> str:
    """A local --model_base_path made absolute; a URL (gs://, s3://, ram://) as given."""
    return path if is_url(path) else os.path.abspath(path)


def warn_about_missing_base_paths(configs) -> None:
    """Through tf.io.gfile, as the poller reads them, so gs:// and the like are checked too."""
    import tensorflow as tf

    for config in configs:
        if not tf.io.gfile.isdir(config.base_path):
            logging.warning("model %s: base path %s does not exist yet; waiting for versions",
                            config.name, config.base_path)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from serving.config_reload import parse_config_file
    from serving.monitoring import ServingMetrics, prometheus_path
    from serving.registry import ModelRegistry, StartupError, single_model_config
    from serving.server import LocalServer, read_ssl_config

    if bool(args.model_base_path) == bool(args.model_config_file):
        print("error: give either --model_base_path (with --model_name) or --model_config_file", file=sys.stderr)
        return 2
    registry = None
    try:
        configs = (parse_config_file(args.model_config_file) if args.model_config_file
                   else [single_model_config(args.model_name, absolute_base_path(args.model_base_path))])
        tls = read_ssl_config(args.ssl_config_file) if args.ssl_config_file else None
        batching = _batching_options(args)
        metrics, metrics_path = ServingMetrics(), prometheus_path(args.monitoring_config_file)
        configure_tf_threads(args)
        registry = ModelRegistry(configs, poll_seconds=args.file_system_poll_wait_seconds,
                                 on_event=metrics.on_model_event, warmup=args.enable_model_warmup,
                                 max_num_load_retries=args.max_num_load_retries,
                                 load_retry_interval_seconds=args.load_retry_interval_micros / 1e6,
                                 batching=batching, allow_version_labels_for_unavailable_models=(
                                     args.allow_version_labels_for_unavailable_models))
        # LocalServer refuses --port=0 (the one statement of that rule, server.py after server.cc).
        server = LocalServer(registry, host=args.host, grpc_port=args.port, rest_port=args.rest_api_port,
                             max_request_bytes=args.max_request_bytes, threads=args.grpc_max_threads,
                             rest_threads=args.rest_api_num_threads, tls=tls,
                             grace_seconds=args.grace_seconds, metrics=metrics, metrics_path=metrics_path,
                             grpc_health=args.enable_grpc_healthcheck_service,
                             rest_max_in_flight=args.rest_api_max_concurrent_requests,
                             rest_timeout_ms=args.rest_api_timeout_in_ms)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        if registry is not None:
            registry.stop()
        return 2
    warn_about_missing_base_paths(configs)
    # The handler only sets flags, which the main thread polls: an Event set from a handler can
    # deadlock with the main thread waiting on that Event (the handler runs in the main thread).
    stopping = []

    def on_signal(*_):
        stopping.append(True)
        registry.stop_waiting()  # a start still waiting for versions gives up

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        server.start()  # stops whatever it started (gRPC, the registry) when it fails
    except StartupError as err:  # main.cc: "Failed to start server. Error: ..."
        print(f"Failed to start server. Error: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:
        # server.cc: the config poll thread, only with a --model_config_file.
        registry.watch_config_file(args.model_config_file, args.model_config_file_poll_wait_seconds)
    print(f"model-server ready: gRPC {args.host}:{server.grpc_port}, REST "
          f"{args.host + ':' + str(server.rest_port) if server.rest_port else 'off'}", flush=True)
    while not stopping:
        time.sleep(0.2)
    logging.info("shutting down: finishing requests in flight")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

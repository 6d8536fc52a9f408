"""model-server: a TF-Serving-compatible development server for machines without Docker.

Started like tensorflow_model_server, with the same flag names for what they share:

    model-server --model_name=NAME --model_base_path=/models/NAME
    model-server --model_config_file=serving/config/models.config

gRPC (PredictionService.Predict / GetModelMetadata, ModelService.GetModelStatus) on --port,
TF Serving's REST API on --rest_api_port. For production, run TensorFlow Serving
(Dockerfile.serve) and scale with replicas; this server is for development and tests.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="model-server", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (0 picks a free port).")
    parser.add_argument("--rest_api_port", type=int, default=8501, help="REST port (0 disables REST).")
    parser.add_argument("--host", default="127.0.0.1",
                        help="Address to bind; 0.0.0.0 to accept other machines (TF Serving binds all).")
    parser.add_argument("--model_name", default="default", help="Model name with --model_base_path.")
    parser.add_argument("--model_base_path", default=None, help="Folder of integer-named versions.")
    parser.add_argument("--model_config_file", default=None, help="TF Serving ModelServerConfig (text format).")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                        help="How often to look for new versions (0: only at start).")
    parser.add_argument("--enable_model_warmup", type=lambda s: s.lower() != "false", default=True,
                        help="Replay assets.extra/tf_serving_warmup_requests before serving a version.")
    parser.add_argument("--max_num_load_retries", type=int, default=5,
                        help="Retries of a version that failed to load.")
    parser.add_argument("--load_retry_interval_micros", type=int, default=60_000_000,
                        help="Wait between load retries, in microseconds.")
    parser.add_argument("--ssl_config_file", default=None, help="TF Serving SSLConfig (text format) for gRPC TLS.")
    parser.add_argument("--max_request_bytes", type=int, default=64 << 20,
                        help="Largest gRPC message or REST body accepted.")
    parser.add_argument("--threads", type=int, default=8, help="Worker threads for each API.")
    parser.add_argument("--grace_seconds", type=float, default=30.0, help="How long SIGTERM waits for requests.")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from serving.registry import ModelRegistry, parse_config_file, single_model_config
    from serving.server import LocalServer, TlsConfig

    if bool(args.model_base_path) == bool(args.model_config_file):
        print("error: give either --model_base_path (with --model_name) or --model_config_file", file=sys.stderr)
        return 2
    try:
        configs = (parse_config_file(args.model_config_file) if args.model_config_file
                   else [single_model_config(args.model_name, os.path.abspath(args.model_base_path))])
        tls = None
        if args.ssl_config_file:
            with open(args.ssl_config_file) as f:
                tls = TlsConfig.parse(f.read())
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for config in configs:
        if not os.path.isdir(config.base_path):
            logging.warning("model %s: base path %s does not exist yet; waiting for versions",
                            config.name, config.base_path)
    registry = ModelRegistry(configs, poll_seconds=args.file_system_poll_wait_seconds,
                             warmup=args.enable_model_warmup, max_num_load_retries=args.max_num_load_retries,
                             load_retry_interval_seconds=args.load_retry_interval_micros / 1e6)
    server = LocalServer(registry, host=args.host, grpc_port=args.port, rest_port=args.rest_api_port,
                         max_request_bytes=args.max_request_bytes, threads=args.threads, tls=tls,
                         grace_seconds=args.grace_seconds)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server.start()
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"model-server ready: gRPC {args.host}:{server.grpc_port}, REST "
          f"{args.host + ':' + str(server.rest_port) if server.rest_port else 'off'}", flush=True)
    stop.wait()
    logging.info("shutting down: finishing requests in flight")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

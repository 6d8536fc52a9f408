"""REST: TF Serving's HTTP API on aiohttp (tensorflow_serving/model_servers/http_rest_api_util.cc).

    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model status
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature defs
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    row or columnar JSON

Errors are {"error": "<message>"} with TF Serving's HTTP status for the gRPC code
(model_api/status.py). Inference runs on a thread pool so the event loop stays responsive;
requests over --rest_api_max_concurrent_requests get 429 at once, a predict slower than
--rest_api_timeout_in_ms gets 504. The Prometheus page is served when monitoring enables it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import web
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving import handlers as ops
from serving import rest_json
from serving.errors import (ServingError, deadline_exceeded, internal_error_message, invalid_argument,
                            resource_exhausted)
from serving.monitoring import ServingMetrics
from serving.predict_util import run_predict, signature_name_or_default
from serving.registry import ModelRegistry

log = logging.getLogger("serving")

# The same expressions as TF Serving's kPredictionApiGegex and kModelStatusApiRegex.
PREDICT_PATH = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)")
STATUS_PATH = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?")


def _json_response(document, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(document, indent=1), status=status, content_type="application/json")


def _error(err: ServingError) -> web.Response:
    return _json_response({"error": err.message}, status=err.http_status)


def _model_spec(name: str, version: str | None, label: str | None) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=unquote(name))
    if version:
        try:
            spec.version.value = int(version)
        except ValueError:
            raise invalid_argument(f"Failed to convert version: {version} to numeric.") from None
    if label:
        spec.version_label = unquote(label)
    return spec


def _proto_json(message) -> dict:
    # TF Serving prints every field (always_print_primitive_fields) with proto field names.
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


@dataclass
class _Call:
    """What one REST request reports to the metrics, and executor work that may outlive it."""
    model_name: str = ""
    version: int = 0
    api: str = ""
    pending: asyncio.Future | None = None


class RestApi:
    def __init__(self, registry: ModelRegistry, executor: ThreadPoolExecutor, max_body_bytes: int,
                 metrics: ServingMetrics | None = None, max_in_flight: int = 64, timeout_ms: int = 30000):
        self.registry = registry
        self.executor = executor
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics or ServingMetrics()
        self.max_in_flight = max_in_flight
        self.timeout_ms = timeout_ms
        self._in_flight = 0  # touched on the event loop only

    async def _run(self, call: _Call, fn, *args, timeout_ms: int = 0):
        """fn on the thread pool. With a timeout (--rest_api_timeout_in_ms, as http_rest_api_handler.cc
        sets RunOptions.timeout_in_ms), DEADLINE_EXCEEDED with DirectSession's message once it passes.
        A thread cannot be stopped, so the work (shielded from the request's cancellation too)
        keeps its in-flight slot until it ends."""
        call.pending = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        waiting = asyncio.shield(call.pending)
        if timeout_ms <= 0:
            return await waiting
        try:
            return await asyncio.wait_for(waiting, timeout_ms / 1000)
        except TimeoutError:
            raise deadline_exceeded("Timed out waiting for notification") from None

    def _leave(self, call: _Call) -> None:
        if call.pending is not None and not call.pending.done():
            call.pending.add_done_callback(self._release)  # work that outlives its request
        else:
            self._release()

    def _release(self, abandoned: asyncio.Future | None = None) -> None:
        self._in_flight -= 1
        if abandoned is not None and not abandoned.cancelled():
            abandoned.exception()  # retrieved: its request was already answered (504), nothing is lost

    async def handle(self, request: web.Request) -> web.Response:
        started, call = time.perf_counter(), _Call()
        if self._in_flight >= self.max_in_flight:
            response, status = _error(self._overloaded()), "RESOURCE_EXHAUSTED"
        else:
            self._in_flight += 1
            try:
                response = await self._answer(request, call)
                # Only a body over --max_request_bytes answers non-200 without raising: what gRPC
                # says for a message over the limit.
                status = "OK" if response.status == 200 else "RESOURCE_EXHAUSTED"
            except ServingError as err:
                response, status = _error(err), err.code.name
            except Exception:  # noqa: BLE001 - one bad request never takes the server down
                incident = uuid.uuid4().hex[:12]
                log.exception("internal error on %s %s (incident %s)", request.method, request.raw_path, incident)
                response, status = _json_response({"error": internal_error_message(incident)}, 500), "INTERNAL"
            finally:
                self._leave(call)
        self.metrics.record_request(call.model_name, call.version, call.api, "REST", status, started)
        return response

    def _overloaded(self) -> ServingError:
        # RESOURCE_EXHAUSTED, as gRPC answers over --grpc_max_threads; TF Serving's status for it is 429.
        return resource_exhausted(f"Too many REST requests in flight (the limit is {self.max_in_flight}, "
                                  "--rest_api_max_concurrent_requests); retry later")

    async def _answer(self, request: web.Request, call: _Call) -> web.Response:
        # TF Serving matches its expressions on the path as sent (evhttp_request.cc uri_path) and
        # decodes the name and label once (http_rest_api_util.cc DecodeArg); aiohttp's request.path
        # is decoded already, so match the raw one.
        path = request.rel_url.raw_path
        if request.method == "POST":
            match = PREDICT_PATH.fullmatch(path)
            if match:
                name, version, label, method = match.groups()
                call.model_name, call.api = unquote(name), method
                return await self._predict(request, call, name, version, label, method)
        elif request.method == "GET":
            match = STATUS_PATH.fullmatch(path)
            if match:
                name, version, label, metadata = match.groups()
                if not name:
                    raise invalid_argument("Missing model name in request.")
                call.model_name = unquote(name)
                spec = _model_spec(name, version, label)
                if metadata:
                    return _json_response(await self._run(call, self._metadata, spec))
                return _json_response(await self._run(call, self._status, spec))
        raise invalid_argument(f"Malformed request: {request.method} {path}")

    async def _predict(self, request, call: _Call, name, version, label, method) -> web.Response:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return self._too_large(request.content_length)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._too_large(None)
        if method.lower() != "predict":
            raise invalid_argument(f"{method} is not supported by this server: its models have predict signatures; "
                                   "use :predict")
        spec = _model_spec(name, version, label)
        document, call.version = await self._run(call, self._predict_blocking, spec, body, timeout_ms=self.timeout_ms)
        return _json_response(document)

    def _too_large(self, size) -> web.Response:
        size_text = f"{size} bytes" if size is not None else "the request body"
        return _json_response({"error": f"{size_text} exceeds the limit of {self.max_body_bytes} bytes "
                                        "(--max_request_bytes); send fewer images per request"}, status=413)

    def _predict_blocking(self, spec, body: bytes) -> tuple[dict, int]:
        servable = self.registry.resolve(spec)

        def inputs_for(signature_name):
            name = signature_name_or_default(signature_name)
            if name not in servable.signature_defs:
                raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
            return servable.signature_defs[name].inputs

        request, fmt = rest_json.parse_predict_body(body, inputs_for)
        request.model_spec.name = servable.name
        request.model_spec.version.value = servable.version  # the servable resolved above answers
        return rest_json.format_predict_response(run_predict(servable, request), fmt), servable.version

    def _status(self, spec) -> dict:
        return _proto_json(ops.model_status(self.registry, get_model_status_pb2.GetModelStatusRequest(model_spec=spec)))

    def _metadata(self, spec) -> dict:
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=["signature_def"])
        response = ops.model_metadata(self.registry, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        # The shape of TF Serving's ToJsonString(GetModelMetadataResponse).
        return {"model_spec": _proto_json(response.model_spec),
                "metadata": {"signature_def": _proto_json(signature_map)}}


def prometheus_handler(metrics: ServingMetrics):
    async def serve_metrics(request: web.Request) -> web.Response:
        # http_server.cc ProcessPrometheusRequest: text/plain, the exporter's page.
        return web.Response(text=metrics.render(), content_type="text/plain")
    return serve_metrics


def build_app(api: RestApi, metrics_path: str | None = None) -> web.Application:
    """The REST routes; TF Serving's metrics page too when `metrics_path` (monitoring config) is set."""
    app = web.Application(client_max_size=api.max_body_bytes)
    if metrics_path:
        app.router.add_route("GET", metrics_path, prometheus_handler(api.metrics))
    app.router.add_route("*", "/v1/{tail:.*}", api.handle)
    return app

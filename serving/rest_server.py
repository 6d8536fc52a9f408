"""REST: TF Serving's HTTP API on aiohttp (tensorflow_serving/model_servers/http_rest_api_util.cc).

    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model status
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature defs
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    row or columnar JSON

Errors are {"error": "<message>"} with TF Serving's HTTP status for the gRPC code
(model_api/status.py). Inference runs on a thread pool so the event loop stays responsive.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

from aiohttp import web
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving import handlers as ops
from serving import rest_json
from serving.predict_util import run_predict, signature_name_or_default
from serving.errors import ServingError, invalid_argument
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


class RestApi:
    def __init__(self, registry: ModelRegistry, executor: ThreadPoolExecutor, max_body_bytes: int):
        self.registry = registry
        self.executor = executor
        self.max_body_bytes = max_body_bytes

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            if request.method == "POST":
                match = PREDICT_PATH.fullmatch(request.path)
                if match:
                    return await self._predict(request, *match.groups())
            elif request.method == "GET":
                match = STATUS_PATH.fullmatch(request.path)
                if match:
                    name, version, label, metadata = match.groups()
                    if not name:
                        raise invalid_argument("Missing model name in request.")
                    spec = _model_spec(name, version, label)
                    if metadata:
                        return _json_response(await self._run(self._metadata, spec))
                    return _json_response(await self._run(self._status, spec))
            raise invalid_argument(f"Malformed request: {request.method} {request.path}")
        except ServingError as err:
            return _error(err)
        except Exception as err:  # noqa: BLE001 - one bad request never takes the server down
            log.exception("internal error on %s %s", request.method, request.path)
            return _json_response({"error": f"internal error: {type(err).__name__}: {err}"}, status=500)

    async def _predict(self, request, name, version, label, method) -> web.Response:
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
        return _json_response(await self._run(self._predict_blocking, spec, body))

    def _too_large(self, size) -> web.Response:
        size_text = f"{size} bytes" if size is not None else "the request body"
        return _json_response({"error": f"{size_text} exceeds the limit of {self.max_body_bytes} bytes "
                                        "(--max_request_bytes); send fewer images per request"}, status=413)

    def _predict_blocking(self, spec, body: bytes) -> dict:
        servable = self.registry.resolve(spec)

        def inputs_for(signature_name):
            name = signature_name_or_default(signature_name)
            if name not in servable.signature_defs:
                raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
            return servable.signature_defs[name].inputs

        request, fmt = rest_json.parse_predict_body(body, inputs_for)
        request.model_spec.name = servable.name
        request.model_spec.version.value = servable.version  # the servable resolved above answers
        return rest_json.format_predict_response(run_predict(servable, request), fmt)

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


def build_app(registry: ModelRegistry, executor: ThreadPoolExecutor, max_body_bytes: int) -> web.Application:
    api = RestApi(registry, executor, max_body_bytes)
    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_route("*", "/v1/{tail:.*}", api.handle)
    return app

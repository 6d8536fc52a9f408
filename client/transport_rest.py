"""REST transport: TF Serving's HTTP API, with {"b64": ...} JSON over one pooled Session."""
from __future__ import annotations

import base64

import numpy as np
import requests
import requests.adapters

from client.options import CallOptions
from client.results import ServerError, VersionStatus
from client.retry import RETRYABLE_CODES, with_retries
from model_api import signature as sig
from model_api.status import code_for_http_status

RETRYABLE_HTTP = (502, 503, 504)
# JSON around the images: '{"signature_name": "...", "instances": [' and each
# '{"image_bytes": {"b64": "..."}}, ' (31 bytes), rounded up.
_BODY_OVERHEAD = 1024
_INSTANCE_OVERHEAD = 64


class RestTransport:
    """Predict posts to /v1/models/NAME:predict (or .../versions/N, .../labels/L when asked):
    the server resolves the latest version in the same request. A separate status call to find
    it first could reach another replica mid-rollout, and a version it names may be gone by
    the predict. TF Serving's REST predict answers only {"predictions": ...}
    (http_rest_api_handler.cc, ProcessPredictRequest), so the answering version is reported
    only when one was asked for (None otherwise: "unreported").

    One requests.Session per transport: one connection pool of `pool_size` kept-alive
    connections shared by the client's threads, closed by close()."""

    name = "rest"

    def __init__(self, base_url: str, options: CallOptions, pool_size: int = 1):
        self.base_url = base_url.rstrip("/")
        self.options = options
        self.session = requests.Session()
        size = max(1, pool_size)
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=size)
        for prefix in ("http://", "https://"):
            self.session.mount(prefix, adapter)
        if options.tls_cert:
            self.session.cert = (options.tls_cert, options.tls_key) if options.tls_key else options.tls_cert

    def close(self) -> None:
        self.session.close()

    def request_bytes(self, sizes) -> int:
        """The JSON body's size: base64 (4 bytes per 3) plus each instance's JSON around it."""
        return _BODY_OVERHEAD + sum(4 * ((size + 2) // 3) + _INSTANCE_OVERHEAD for size in sizes)

    def _model_url(self, version: int | None = None) -> str:
        url = f"{self.base_url}/v1/models/{self.options.model}"
        if version is not None:
            return f"{url}/versions/{version}"
        if self.options.label:
            return f"{url}/labels/{self.options.label}"
        return url

    def _request(self, method: str, url: str, **kwargs) -> dict:
        def attempt() -> dict:
            try:
                # --tls-ca per request: a Session's verify loses to REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE
                # (psf/requests#3829), which would silently trust the system CAs instead.
                if self.options.tls_ca:
                    kwargs["verify"] = self.options.tls_ca
                response = self.session.request(method, url, timeout=self.options.timeout, **kwargs)
            except requests.Timeout as err:
                raise ServerError("DEADLINE_EXCEEDED", str(err)) from None
            except requests.ConnectionError as err:
                raise ServerError("UNAVAILABLE", f"cannot reach {self.base_url}: {err.__class__.__name__}") from None
            if response.status_code == 200:
                return response.json()
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise ServerError(code_for_http_status(response.status_code, message), message, response.status_code)

        return with_retries(attempt, self.options,
                            retryable=lambda err: err.http_status in RETRYABLE_HTTP if err.http_status
                            else err.code in RETRYABLE_CODES)

    def predict(self, images: list[bytes]) -> tuple[int | None, dict]:
        body = {"signature_name": self.options.signature or sig.SERVING_DEFAULT,
                "instances": [{sig.INPUT_IMAGE_BYTES: {"b64": base64.b64encode(i).decode("ascii")}} for i in images]}
        document = self._request("POST", self._model_url(self.options.version) + ":predict", json=body)
        rows = document.get("predictions", [])
        outputs = {key: [row[key] for row in rows] for key in (rows[0] if rows else {})}
        for key in (sig.OUTPUT_PROBABILITIES, sig.OUTPUT_LOGITS, sig.OUTPUT_CLASSES):
            if key in outputs:
                outputs[key] = np.asarray(outputs[key])
        return self.options.version, outputs

    def status(self) -> list[VersionStatus]:
        document = self._request("GET", self._model_url(self.options.version))
        return [VersionStatus(int(s["version"]), s["state"], s.get("status", {}).get("error_code", "OK"),
                              s.get("status", {}).get("error_message", ""))
                for s in document.get("model_version_status", [])]

    def metadata(self) -> dict:
        return self._request("GET", self._model_url(self.options.version) + "/metadata")

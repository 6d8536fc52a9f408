"""REST transport: TF Serving's HTTP API, with {"b64": ...} JSON and a reused connection."""
from __future__ import annotations

import base64
import threading

import numpy as np
import requests

from client.options import CallOptions
from client.results import ServerError, VersionStatus
from client.retry import RETRYABLE_CODES, with_retries
from model_api import signature as sig
from model_api.status import code_for_http_status

RETRYABLE_HTTP = (502, 503, 504)


class RestTransport:
    """TF Serving's REST predict answers without the version it used, so when no version is
    pinned this transport asks the model's status for the newest AVAILABLE version and sends
    to /versions/{v}: the version it reports is then the one that answered. If that version
    is unloaded meanwhile (NOT_FOUND), it looks again once."""

    name = "rest"

    def __init__(self, base_url: str, options: CallOptions):
        self.base_url = base_url.rstrip("/")
        self.options = options
        self._local = threading.local()  # one Session (one kept-alive connection pool) per thread
        self._latest: int | None = None

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            if self.options.tls_cert:
                session.cert = (self.options.tls_cert, self.options.tls_key) if self.options.tls_key \
                    else self.options.tls_cert
        return session

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()

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

    def _answering_version(self, refresh: bool = False) -> int | None:
        if self.options.version is not None:
            return self.options.version
        if self.options.label:
            return None  # the label's version is resolved by the server
        if self._latest is None or refresh:
            available = [s.version for s in self.status() if s.state == "AVAILABLE"]
            self._latest = max(available) if available else None
        return self._latest

    def predict(self, images: list[bytes]) -> tuple[int | None, dict]:
        body = {"signature_name": self.options.signature or sig.SERVING_DEFAULT,
                "instances": [{sig.INPUT_IMAGE_BYTES: {"b64": base64.b64encode(i).decode("ascii")}} for i in images]}
        version = self._answering_version()
        try:
            document = self._request("POST", self._model_url(version) + ":predict", json=body)
        except ServerError as err:
            if err.code != "NOT_FOUND" or self.options.version is not None or version is None:
                raise
            version = self._answering_version(refresh=True)  # a newer version replaced it
            document = self._request("POST", self._model_url(version) + ":predict", json=body)
        rows = document.get("predictions", [])
        outputs = {key: [row[key] for row in rows] for key in (rows[0] if rows else {})}
        for key in (sig.OUTPUT_PROBABILITIES, sig.OUTPUT_LOGITS, sig.OUTPUT_CLASSES):
            if key in outputs:
                outputs[key] = np.asarray(outputs[key])
        return version, outputs

    def status(self) -> list[VersionStatus]:
        document = self._request("GET", self._model_url(self.options.version))
        return [VersionStatus(int(s["version"]), s["state"], s.get("status", {}).get("error_code", "OK"),
                              s.get("status", {}).get("error_message", ""))
                for s in document.get("model_version_status", [])]

    def metadata(self) -> dict:
        return self._request("GET", self._model_url(self.options.version) + "/metadata")

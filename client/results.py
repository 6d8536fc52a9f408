"""What the client returns: one Prediction per image, and errors carrying the server's status."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from model_api.status import is_image_error


class ServerError(Exception):
    """A call failed: `code` is the gRPC status name (REST statuses are mapped to one),
    `message` the server's own words, `http_status` set for REST."""

    def __init__(self, code: str, message: str, http_status: int | None = None):
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.http_status = http_status

    @property
    def is_image_error(self) -> bool:
        """The server refused one image's content (undecodable, empty, too large), so splitting
        the batch finds it. Request-level refusals (a batch over the server's max_batch_size,
        an unknown signature, a wrong input name or dtype) are not: resending parts of the
        batch would only repeat them. Decided from the message (model_api/status.py), since
        TF Serving's REST errors carry no code and share HTTP 400 across several."""
        return self.code == "INVALID_ARGUMENT" and is_image_error(self.message)

    @property
    def is_too_large(self) -> bool:
        """The request weighed more than something on the way accepts, so halves may pass:
        gRPC's RESOURCE_EXHAUSTED (a message over a max message length; also an out-of-memory
        run, which halves help too) or HTTP 413 (a body limit: the local server's
        --max_request_bytes, a proxy's). Not REST's 429, which TF Serving and proxies use for
        load: halves would only double the requests."""
        if self.http_status is not None:
            return self.http_status == 413
        return self.code == "RESOURCE_EXHAUSTED"


@dataclass
class Prediction:
    source: str                          # the path as given, or "<bytes #i>"
    label: str | None = None
    class_index: int | None = None
    probabilities: list[float] = field(default_factory=list)
    version: int | None = None           # the model version that answered
    error: str | None = None             # why this image failed, if it did

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def probability(self) -> float | None:
        return self.probabilities[self.class_index] if self.ok and self.class_index is not None else None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VersionStatus:
    version: int
    state: str          # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str     # "OK" or a status name
    error_message: str = ""

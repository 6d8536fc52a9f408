"""What the client returns: one Prediction per image, and errors carrying the server's status."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


class ServerError(Exception):
    """A call failed: `code` is the gRPC status name (REST statuses are mapped to one),
    `message` the server's own words, `http_status` set for REST."""

    def __init__(self, code: str, message: str, http_status: int | None = None):
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.http_status = http_status

    @property
    def is_bad_input(self) -> bool:
        """The request's content was refused (e.g. an undecodable image), not the call itself."""
        return self.code == "INVALID_ARGUMENT"


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

"""How TF Serving maps its status codes onto HTTP statuses for the REST API.

Mirrors ToHTTPStatusCode in tensorflow_serving/model_servers/http_server.cc.
"""
from __future__ import annotations

# gRPC status code name -> HTTP status.
HTTP_STATUS_FOR_CODE = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


def http_status(code_name: str) -> int:
    return HTTP_STATUS_FOR_CODE.get(code_name, 500)


def code_for_http_status(status: int) -> str:
    """Best inverse used by the REST client to report a gRPC-style code name."""
    preferred = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED",
                 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
                 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 413: "RESOURCE_EXHAUSTED"}
    return preferred.get(status, "UNKNOWN")

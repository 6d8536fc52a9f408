"""Errors with TF Serving's status codes, shared by the gRPC and REST front ends."""
from __future__ import annotations

import grpc

from model_api.status import code_name, http_status
from model_api.tf_errors import clean_tf_message


class ServingError(Exception):
    """A request failed with a gRPC status code and a message meant for the caller."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return http_status(self.code.name)


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def unavailable(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNAVAILABLE, message)


def resource_exhausted(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def deadline_exceeded(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, message)


# grpc_status_util.cc ToGRPCStatus: gRPC messages are cut at 1024 characters. REST is not cut
# (http_server.cc writes the whole status message into {"error": ...}).
GRPC_MESSAGE_LIMIT = 1024


def grpc_message(message: str) -> str:
    """A status message as TF Serving sends it over gRPC."""
    if len(message) > GRPC_MESSAGE_LIMIT:
        return message[:GRPC_MESSAGE_LIMIT] + "...TRUNCATED"
    return message


def internal_error_message(incident: str) -> str:
    """What the caller reads when this server itself failed (a bug, not a TF Status): the
    exception's text stays in the server log, under `incident`, as it may name files or internals."""
    return f"Internal error in the model server (logged as incident {incident})"


def with_code(name: str, message: str) -> ServingError:
    """A ServingError from a canonical code name ("NOT_FOUND", ...)."""
    return ServingError(grpc.StatusCode[name], message)


def from_tf_error(err) -> ServingError:
    """A TensorFlow OpError raised while running a signature -> the same status code.

    TF's messages end with the graph node that failed ("\\n\\t [[{{node ...}}]]"); callers
    need the first part, which says what was wrong with their input.
    """
    name = code_name(getattr(err, "error_code", 13))
    return with_code("UNKNOWN" if name == "OK" else name, clean_tf_message(err.message or str(err)))

"""Status codes: their numbers, TF Serving's HTTP status for each, and the way back.

HTTP_STATUS_FOR_CODE mirrors ToHTTPStatusCode in tensorflow_serving/model_servers/http_server.cc.
"""
from __future__ import annotations

import re

from model_api.signature import IMAGE_ERROR_PREFIX

# Canonical codes by number: tensorflow/core/protobuf/error_codes.proto, the same numbering as gRPC.
CODE_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
              "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")

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

# TF Serving's FAILED_PRECONDITION messages that can reach a REST client (http_server.cc sends
# only {"error": message}, and 400 is shared with INVALID_ARGUMENT and OUT_OF_RANGE). The local
# server builds its messages from these same constants (serving/predict_util.py, serving/batching.py).
# predict_util.cc: 'Serving signature key "NAME" not found.'
SIGNATURE_KEY_NOT_FOUND = "Serving signature key"
# batching_session.cc: tensors of different shapes in one batch without pad_variable_length_inputs.
PADDING_TURNED_OFF = "padding is turned off"
# batching_session.cc SplitOutputTensors: an output that is not batch-major ("Batched output
# tensor has 0 dimensions", "Batched output tensor's 0th dimension does not equal ...").
BATCHED_OUTPUT_TENSOR = "Batched output tensor"
_FAILED_PRECONDITION_MESSAGES = (SIGNATURE_KEY_NOT_FOUND, PADDING_TURNED_OFF, BATCHED_OUTPUT_TENSOR)


# How the exported signature says that one image is bad: model_api/preprocess.py's checks all
# start IMAGE_ERROR_PREFIX (empty, not a JPEG/PNG/GIF/BMP, truncated, too large), and TF's decode
# kernels name the format ("Invalid JPEG data", "Invalid PNG", "Invalid GIF data") or the
# channels they found. No request-level refusal (batch size, signature, input name, dtype,
# JSON) says either, so a client can tell the two apart from the message alone.
_IMAGE_ERROR = re.compile(rf"\b{re.escape(IMAGE_ERROR_PREFIX)}\b|\b(JPEG|PNG|GIF|BMP)\b"
                          r"|channels inherent in the image")


def is_image_error(message: str) -> bool:
    """True if an INVALID_ARGUMENT message is about one image's content (not the request)."""
    return bool(_IMAGE_ERROR.search(message))


def code_name(number: int) -> str:
    return CODE_NAMES[number] if 0 <= number < len(CODE_NAMES) else "UNKNOWN"


def code_number(name: str) -> int:
    """The number of a canonical code name; UNKNOWN's for a name that is not one."""
    return CODE_NAMES.index(name if name in CODE_NAMES else "UNKNOWN")


def http_status(code_name: str) -> int:
    return HTTP_STATUS_FOR_CODE.get(code_name, 500)


def code_for_http_status(status: int, message: str = "") -> str:
    """The REST client's best reading of a code from TF Serving's HTTP status and message.

    Several codes share a status (400: INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE),
    so for 400 the message decides: one of TF Serving's FAILED_PRECONDITION messages reads
    as FAILED_PRECONDITION, anything else as INVALID_ARGUMENT. Callers must not decide what
    to do with a request from the code alone (client/results.py looks at the message).
    """
    if status == 400 and any(fragment in message for fragment in _FAILED_PRECONDITION_MESSAGES):
        return "FAILED_PRECONDITION"
    preferred = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED",
                 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
                 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 413: "RESOURCE_EXHAUSTED", 499: "CANCELLED"}
    return preferred.get(status, "UNKNOWN")

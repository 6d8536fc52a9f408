"""Options shared by both transports."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CallOptions:
    model: str
    version: int | None = None          # a specific version, or
    label: str | None = None            # a version label, or neither for the latest
    signature: str | None = None        # default: serving_default
    timeout: float = 30.0               # seconds per call (the gRPC deadline / HTTP timeout)
    retries: int = 3                    # extra attempts on UNAVAILABLE / DEADLINE_EXCEEDED (HTTP 503/504)
    backoff_seconds: float = 0.2        # the first wait's upper bound; doubles each retry (full jitter)
    max_backoff_seconds: float = 5.0
    wait_for_ready: bool = False        # gRPC: wait (up to the deadline) for the server to come up
    max_message_bytes: int = 64 << 20   # gRPC: the largest answer accepted
    compression: str | None = None      # gRPC: "gzip" or "deflate"
    tls_ca: str | None = None           # PEM root certificate to trust (gRPC TLS / HTTPS)
    tls_cert: str | None = None         # client certificate for mTLS
    tls_key: str | None = None
    tls_server_name: str | None = None  # gRPC: the name the server certificate was issued to

    def __post_init__(self):
        if self.version is not None and self.label:
            raise ValueError("give a version or a label, not both")

"""How images are grouped into requests: at most `max_images` each (the server's max_batch_size)
and at most `max_bytes` each as sent (its message or body limit), in input order."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

# Images per request: within serving/config/batching_parameters.txt's max_batch_size (32), which
# TF Serving enforces per request when batching is on.
DEFAULT_BATCH_SIZE = 16
# Bytes per request as sent (gRPC message / REST body): below the 64 MiB that the local server's
# --max_request_bytes accepts by default, leaving room for what the size estimate leaves out.
# TF Serving's own gRPC limit is INT32_MAX (model_servers/server.cc, SetMaxMessageSize), but a
# proxy or ingress in front of it usually has a lower one; splitting on refusal covers those.
DEFAULT_MAX_REQUEST_BYTES = 48 << 20

RequestBytes = Callable[[Sequence[int]], int]  # image sizes -> bytes of one request carrying them


@dataclass
class Plan:
    batches: list[list[int]] = field(default_factory=list)  # indices of the images, in input order
    oversized: list[int] = field(default_factory=list)      # images over the budget even alone


def plan_batches(sizes: Sequence[int], max_images: int, max_bytes: int, request_bytes: RequestBytes) -> Plan:
    """Fill each request in order until the next image would pass either limit."""
    plan, current = Plan(), []
    for index, size in enumerate(sizes):
        if request_bytes([size]) > max_bytes:
            plan.oversized.append(index)
            continue
        if current and (len(current) >= max_images
                        or request_bytes([sizes[i] for i in current] + [size]) > max_bytes):
            plan.batches.append(current)
            current = []
        current.append(index)
    if current:
        plan.batches.append(current)
    return plan


def oversized_message(size: int, request_size: int, max_bytes: int) -> str:
    return (f"RESOURCE_EXHAUSTED: not sent: the image is {size} bytes, {request_size} bytes as a request of "
            f"its own, over the client's per-request limit of {max_bytes} bytes (--max-request-bytes)")

"""The one retry policy both transports use: `options.retries` more attempts after a
retryable failure, waiting `backoff_seconds`, doubling up to `max_backoff_seconds`."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

from client.options import CallOptions
from client.results import ServerError

T = TypeVar("T")
RETRYABLE_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def with_retries(attempt: Callable[[], T], options: CallOptions,
                 retryable: Callable[[ServerError], bool] = lambda err: err.code in RETRYABLE_CODES) -> T:
    """Run `attempt` (one call, raising ServerError on failure) under the retry policy."""
    delay = options.backoff_seconds
    for remaining in range(options.retries, -1, -1):
        try:
            return attempt()
        except ServerError as err:
            if remaining == 0 or not retryable(err):
                raise
        time.sleep(delay)
        delay = min(delay * 2, options.max_backoff_seconds)
    raise AssertionError("unreachable")

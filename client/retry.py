"""The one retry policy both transports use: `options.retries` more attempts after a
retryable failure, each after a fully jittered exponential backoff."""
from __future__ import annotations

import random
import time
from typing import Callable, TypeVar

from client.options import CallOptions
from client.results import ServerError

T = TypeVar("T")
RETRYABLE_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
_MAX_DOUBLINGS = 62  # base * 2**n stays a float long after any cap is reached


def backoff_seconds(retry: int, base: float, cap: float, uniform: Callable[[float, float], float] = random.uniform
                    ) -> float:
    """"Full jitter" (AWS Architecture Blog, Exponential Backoff And Jitter): a uniform draw in
    [0, min(cap, base * 2**retry)], so clients refused together (a rollout, a restart) do not
    come back together."""
    return uniform(0.0, min(cap, base * 2 ** min(retry, _MAX_DOUBLINGS)))


def with_retries(attempt: Callable[[], T], options: CallOptions,
                 retryable: Callable[[ServerError], bool] = lambda err: err.code in RETRYABLE_CODES,
                 sleep: Callable[[float], None] = time.sleep,
                 uniform: Callable[[float, float], float] = random.uniform) -> T:
    """Run `attempt` (one call, raising ServerError on failure) under the retry policy."""
    retries = max(0, options.retries)
    for retry in range(retries + 1):
        try:
            return attempt()
        except ServerError as err:
            if retry == retries or not retryable(err):
                raise
        sleep(backoff_seconds(retry, options.backoff_seconds, options.max_backoff_seconds, uniform))
    raise AssertionError("unreachable")

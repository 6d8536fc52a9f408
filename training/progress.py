"""One readable progress line per epoch (containers log lines, not progress bars), and the
stopwatch that sums a phase's seconds per activity (cache, train, evaluate)."""
from __future__ import annotations

import contextlib
import sys
import time

import keras


class EpochLine(keras.callbacks.Callback):
    def __init__(self, phase: str, total_epochs: int, stream=None):
        super().__init__()
        self.phase = phase
        self.total_epochs = total_epochs
        self.stream = stream or sys.stdout
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items())
        print(f"[{self.phase}] epoch {epoch + 1}/{self.total_epochs}  {metrics}  "
              f"({time.perf_counter() - self._started:.1f}s)", file=self.stream, flush=True)


def say(message: str) -> None:
    print(message, flush=True)


class Stopwatch:
    """Seconds per activity, summed; `start` carries the sums of earlier processes (a resumed phase)."""

    def __init__(self, start: dict[str, float] | None = None):
        self.seconds: dict[str, float] = dict(start or {})

    @contextlib.contextmanager
    def timing(self, activity: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[activity] = self.seconds.get(activity, 0.0) + time.perf_counter() - started

    def __getitem__(self, activity: str) -> float:
        return self.seconds.get(activity, 0.0)

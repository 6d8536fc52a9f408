"""One interface over both transports: classify image files or bytes, in batches.

Each image is sent exactly as it is: no decoding or resizing here, the model does it.
A batch that the server refuses because of one image's content (TF Serving fails a whole
batch when one image is undecodable) is split in halves and resent, down to single images,
so every good image still gets its answer and each bad one gets its own error message.
Any other refusal (a batch larger than the server's max_batch_size, an unknown signature,
a wrong input) fails once with the server's message: splitting would only repeat it.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

import numpy as np

from client.options import CallOptions
from client.results import Prediction, ServerError, VersionStatus
from model_api import signature as sig

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# Images per request: within serving/config/batching_parameters.txt's max_batch_size (32), which
# TF Serving enforces per request when batching is on.
DEFAULT_BATCH_SIZE = 16


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files as given; directories walked (sorted) for image files, each reported as the
    directory as given joined with the file's path inside it."""
    found = []
    for given in paths:
        if os.path.isdir(given):
            for root, dirs, files in os.walk(given):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(os.path.join(root, f) for f in sorted(files)
                             if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith("."))
        else:
            found.append(given)
    return found


class ModelClient:
    def __init__(self, transport, batch_size: int = DEFAULT_BATCH_SIZE, concurrency: int = 1):
        self.transport = transport
        self.batch_size = max(1, batch_size)
        self.concurrency = max(1, concurrency)

    @classmethod
    def grpc(cls, target: str, model: str, batch_size: int = DEFAULT_BATCH_SIZE, concurrency: int = 1,
             **options) -> "ModelClient":
        from client.transport_grpc import GrpcTransport

        return cls(GrpcTransport(target, CallOptions(model=model, **options)), batch_size, concurrency)

    @classmethod
    def rest(cls, base_url: str, model: str, batch_size: int = DEFAULT_BATCH_SIZE, concurrency: int = 1,
             **options) -> "ModelClient":
        from client.transport_rest import RestTransport

        return cls(RestTransport(base_url, CallOptions(model=model, **options)), batch_size, concurrency)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- calls --------------------------------------------------------------------------------
    def status(self) -> list[VersionStatus]:
        return self.transport.status()

    def metadata(self) -> dict:
        return self.transport.metadata()

    def predict_bytes(self, images: list[tuple[str, bytes]],
                      on_done: Callable[[list[Prediction]], None] | None = None) -> list[Prediction]:
        """[(source, encoded image)] -> one Prediction per image, in order."""
        batches = [images[i:i + self.batch_size] for i in range(0, len(images), self.batch_size)]

        def run(batch):
            results = self._predict_batch(batch)
            if on_done:
                on_done(results)
            return results

        if self.concurrency == 1 or len(batches) <= 1:
            answered = [run(b) for b in batches]
        else:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                answered = list(pool.map(run, batches))
        return [p for batch in answered for p in batch]

    def predict_files(self, paths: Iterable[str],
                      on_done: Callable[[list[Prediction]], None] | None = None) -> list[Prediction]:
        items, unreadable = [], {}
        for index, path in enumerate(paths):
            try:
                with open(path, "rb") as f:
                    items.append((path, f.read()))
            except OSError as err:
                unreadable[index] = Prediction(source=path, error=f"cannot read file: {err.strerror or err}")
        answered = iter(self.predict_bytes(items, on_done))
        results = [unreadable[i] if i in unreadable else next(answered) for i in range(len(items) + len(unreadable))]
        if unreadable and on_done:
            on_done(list(unreadable.values()))
        return results

    def _predict_batch(self, batch: list[tuple[str, bytes]]) -> list[Prediction]:
        try:
            version, outputs = self.transport.predict([data for _, data in batch])
        except ServerError as err:
            if not err.is_image_error:
                raise
            if len(batch) == 1:
                return [Prediction(source=batch[0][0], error=f"{err.code}: {err.message}")]
            middle = len(batch) // 2  # find the bad image(s); the rest still get answers
            return self._predict_batch(batch[:middle]) + self._predict_batch(batch[middle:])
        return _to_predictions([source for source, _ in batch], version, outputs)


def _to_predictions(sources: list[str], version: int | None, outputs: dict) -> list[Prediction]:
    probabilities = np.asarray(outputs[sig.OUTPUT_PROBABILITIES], dtype=float)
    classes = np.asarray(outputs[sig.OUTPUT_CLASSES]).astype(int)
    labels = list(outputs[sig.OUTPUT_LABELS])
    return [Prediction(source=source, label=str(labels[i]), class_index=int(classes[i]),
                       probabilities=[float(p) for p in probabilities[i]], version=version)
            for i, source in enumerate(sources)]

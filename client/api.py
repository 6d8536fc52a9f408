"""One interface over both transports: classify image files or bytes, in batches.

Each image is sent exactly as it is: no decoding or resizing here, the model does it.
Requests are filled up to a count and a byte budget (client/batching.py); an image over the
budget even alone fails by itself, unsent. A batch that the server refuses because of one
image's content (TF Serving fails a whole batch when one image is undecodable) or because
it is too large (gRPC RESOURCE_EXHAUSTED, HTTP 413: a limit lower than the budget) is split
in halves and resent, down to single images, so every other image still gets its answer
and each refused one gets its own error message. Any other refusal (a batch larger than
the server's max_batch_size, an unknown signature, a wrong input) fails once with the
server's message: splitting would only repeat it.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

import numpy as np

from client.batching import DEFAULT_BATCH_SIZE, DEFAULT_MAX_REQUEST_BYTES, oversized_message, plan_batches
from client.options import CallOptions
from client.results import Prediction, ServerError, VersionStatus
from model_api import signature as sig
from model_api.image_folder import walk_files

# What `predict DIR` sends from a folder (evaluate sends every file: a labelled folder is all images).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files as given; directories walked by the one folder rule (model_api/image_folder.py:
    sorted, hidden names skipped, symlinked folders followed) for image files, each reported
    as the directory as given joined with the file's path inside it."""
    found = []
    for given in paths:
        if os.path.isdir(given):
            found.extend(path for path in walk_files(given) if path.lower().endswith(IMAGE_SUFFIXES))
        else:
            found.append(given)
    return found


class ModelClient:
    """`max_request_bytes`: what one request may weigh as sent (the transport estimates it)."""

    def __init__(self, transport, batch_size: int = DEFAULT_BATCH_SIZE, concurrency: int = 1,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        self.transport = transport
        self.batch_size = max(1, batch_size)
        self.concurrency = max(1, concurrency)
        self.max_request_bytes = max(1, max_request_bytes)

    @classmethod
    def grpc(cls, target: str, model: str, batch_size: int = DEFAULT_BATCH_SIZE, concurrency: int = 1,
             max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, **options) -> "ModelClient":
        """`target`: HOST:PORT, or dns:///HOST:PORT to spread requests over every address
        the name resolves to (client/transport_grpc.py)."""
        from client.transport_grpc import GrpcTransport

        return cls(GrpcTransport(target, CallOptions(model=model, **options)), batch_size, concurrency,
                   max_request_bytes)

    @classmethod
    def rest(cls, base_url: str, model: str, batch_size: int = DEFAULT_BATCH_SIZE, concurrency: int = 1,
             max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, **options) -> "ModelClient":
        from client.transport_rest import RestTransport

        transport = RestTransport(base_url, CallOptions(model=model, **options), pool_size=concurrency)
        return cls(transport, batch_size, concurrency, max_request_bytes)

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
        sizes = [len(data) for _, data in images]
        plan = plan_batches(sizes, self.batch_size, self.max_request_bytes, self.transport.request_bytes)
        results: list[Prediction | None] = [None] * len(images)
        refused = [self._oversized(images[i]) for i in plan.oversized]
        for i, prediction in zip(plan.oversized, refused):
            results[i] = prediction
        if refused and on_done:
            on_done(refused)

        def run(indices):
            answered = self._predict_batch([images[i] for i in indices])
            if on_done:
                on_done(answered)
            return answered

        if self.concurrency == 1 or len(plan.batches) <= 1:
            answered = [run(b) for b in plan.batches]
        else:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                answered = list(pool.map(run, plan.batches))
        for indices, predictions in zip(plan.batches, answered):
            for i, prediction in zip(indices, predictions):
                results[i] = prediction
        return results

    def _oversized(self, image: tuple[str, bytes]) -> Prediction:
        source, data = image
        message = oversized_message(len(data), self.transport.request_bytes([len(data)]), self.max_request_bytes)
        return Prediction(source=source, error=message)

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
            if not (err.is_image_error or err.is_too_large):
                raise
            if len(batch) == 1:
                return [Prediction(source=batch[0][0], error=f"{err.code}: {err.message}")]
            middle = len(batch) // 2  # find the bad image(s), or halve the weight; the rest still get answers
            return self._predict_batch(batch[:middle]) + self._predict_batch(batch[middle:])
        return _to_predictions([source for source, _ in batch], version, outputs)


def _to_predictions(sources: list[str], version: int | None, outputs: dict) -> list[Prediction]:
    probabilities = np.asarray(outputs[sig.OUTPUT_PROBABILITIES], dtype=float)
    classes = np.asarray(outputs[sig.OUTPUT_CLASSES]).astype(int)
    labels = list(outputs[sig.OUTPUT_LABELS])
    return [Prediction(source=source, label=str(labels[i]), class_index=int(classes[i]),
                       probabilities=[float(p) for p in probabilities[i]], version=version)
            for i, source in enumerate(sources)]

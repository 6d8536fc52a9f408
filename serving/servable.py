"""The lowest serving layer: one loaded model version (a servable), run as TF Serving runs it.

TF Serving's servables/tensorflow/saved_model_bundle_factory.cc loads a version with the C++
SavedModelBundle loader and, with --enable_batching, wraps its Session in a BatchingSession (one
queue per Run() signature: the sets of feed and fetch tensor names). This module does the same with
model_api/session_bundle.py (TF1 graph-and-Session loading through TensorFlow's Python loader: the
same graph and Session execution, not the same loader code) and serving/batching.py.
Nothing here knows about model names, versions policies or the APIs: serving/registry.py and the
handlers do.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

from model_api.session_bundle import SessionBundle
from serving.batching import BatchQueue, BatchScheduler


@dataclass
class Servable:
    """One loaded version: its SignatureDefs and a Session (optionally batched) that runs them."""

    name: str
    version: int
    path: str
    bundle: SessionBundle
    scheduler: BatchScheduler | None = None
    # When batching: one queue per Run() signature, (feed tensor names, fetch tensor names).
    queues: dict = field(default_factory=dict)
    unloaded: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        # The Session (and its graph) goes with the last reference to this servable: the registry's,
        # or that of the last request still running on an unloaded version (TF Serving likewise
        # destroys a servable once its last ServableHandle is released). Nothing this servable owns
        # refers back to it (a queue's runner holds the bundle), so no cycle waits for the cyclic GC.
        weakref.finalize(self, self.bundle.close)

    @classmethod
    def load(cls, name: str, version: int, path: str, scheduler: BatchScheduler | None = None,
             session_config=None) -> "Servable":
        """Load the SavedModel into a Session; BundleError (with TF Serving's code) if it fails.
        `session_config`: a tf.compat.v1.ConfigProto, e.g. model_api.session_bundle.thread_config(intra, inter)."""
        return cls(name=name, version=version, path=path, bundle=SessionBundle(path, session_config=session_config),
                   scheduler=scheduler)

    @property
    def signature_defs(self) -> dict:
        return self.bundle.signature_defs

    def run(self, signature_name: str, inputs: dict, output_filter: list[str] | None = None) -> dict:
        """alias -> ndarray in, alias -> ndarray out (every output, or those of `output_filter`).

        With batching, every Run() is batched, as in TF Serving: BatchingSession::InternalRun
        (tensorflow_serving/batching/batching_session.cc) looks its TensorSignature (the sets of
        feed and fetch tensor names) up among the SignatureDefs' and, for any other one (an
        output_filter, say), creates a queue for it on first use with the default scheduler creator
        WrapSessionForBatching gives it (servables/tensorflow/bundle_factory_util.cc). So a request
        over max_batch_size fails with "Task size N is larger than maximum input batch size M" with or
        without an output_filter. Queues are created here on first use for every signature: a queue
        made at load or at the first request behaves the same."""
        signature = self.signature_defs[signature_name]
        aliases = list(output_filter) if output_filter else sorted(signature.outputs)
        feeds = {signature.inputs[alias].name: value for alias, value in inputs.items()}
        fetches = tuple(sorted({signature.outputs[alias].name for alias in aliases}))
        if self.scheduler is None:
            values = self.bundle.run_tensors(feeds, fetches)
        else:
            values = self._queue(frozenset(feeds), fetches).submit(feeds)
        return {alias: values[signature.outputs[alias].name] for alias in aliases}

    def _queue(self, feeds: frozenset, fetches: tuple) -> BatchQueue:
        with self._lock:
            queue = self.queues.get((feeds, fetches))
            if queue is None:
                bundle = self.bundle  # not self: a queue must not keep its servable alive
                queue = self.scheduler.add_queue(lambda merged: bundle.run_tensors(merged, fetches))
                self.queues[(feeds, fetches)] = queue
                if self.unloaded:
                    self.scheduler.remove_queue(queue)  # serves this request, then goes
            return queue

    def unload(self) -> None:
        """Close this version's queues; requests still holding it finish (a closed queue runs what it
        gets at once), and the Session is freed with the last reference, so an unload never fails a
        request in flight."""
        with self._lock:
            self.unloaded = True
            queues = list(self.queues.values())
        for queue in queues:
            self.scheduler.remove_queue(queue)

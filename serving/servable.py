"""The lowest serving layer: one loaded model version (a servable), run as TF Serving runs it.

TF Serving's servables/tensorflow/saved_model_bundle_factory.cc loads a version with the C++
SavedModelBundle loader and, with --enable_batching, wraps its Session in a BatchingSession
(one queue per signature). This module does the same with model_api/session_bundle.py (the
same C++ loader, through its Python binding) and serving/batching.py. Nothing here knows
about model names, versions policies or the APIs: serving/registry.py and the handlers do.
"""
from __future__ import annotations

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
    queues: dict = field(default_factory=dict)   # signature name -> BatchQueue, when batching
    scheduler: BatchScheduler | None = None

    @classmethod
    def load(cls, name: str, version: int, path: str, scheduler: BatchScheduler | None = None) -> "Servable":
        """Load through the C++ SavedModelBundle loader; BundleError (with TF Serving's code) if it fails."""
        servable = cls(name=name, version=version, path=path, bundle=SessionBundle(path), scheduler=scheduler)
        if scheduler is not None:
            for signature_name in servable.signature_defs:
                if not signature_name.startswith("__"):  # __saved_model_init_op is not served
                    servable.queues[signature_name] = scheduler.add_queue(servable._runner(signature_name))
        return servable

    @property
    def signature_defs(self) -> dict:
        return self.bundle.signature_defs

    def _runner(self, signature_name: str):
        return lambda inputs: self.bundle.run(signature_name, inputs)

    def run(self, signature_name: str, inputs: dict, output_filter: list[str] | None = None) -> dict:
        """alias -> ndarray in, alias -> ndarray out. Batched only when every output is fetched:
        TF Serving batches a Run() whose feeds and fetches equal a signature's, and runs any
        other Run() (an output_filter) unbatched (BatchingSession::InternalRun)."""
        queue: BatchQueue | None = self.queues.get(signature_name)
        fetches_all = not output_filter or set(output_filter) == set(self.signature_defs[signature_name].outputs)
        if queue is not None and fetches_all:  # a closed queue still serves (BatchQueue.submit)
            outputs = queue.submit(inputs)
            return {alias: outputs[alias] for alias in (output_filter or sorted(outputs))}
        return self.bundle.run(signature_name, inputs, output_filter)

    def unload(self) -> None:
        """Close this version's queues; requests still holding it finish (a closed queue runs what it
        gets at once), and the Session is freed with the last reference, so an unload never fails a
        request in flight."""
        for queue in self.queues.values():
            self.scheduler.remove_queue(queue)

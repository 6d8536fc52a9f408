"""Load and run a SavedModel as TF Serving does (servables/tensorflow/saved_model_bundle_factory.cc, predict_util.cc):
a graph in a Session, fed and fetched by the SignatureDef's tensor names; why and its limits: docs/serving.md."""
from __future__ import annotations

import threading
from typing import Mapping

import numpy as np

from model_api.signature import is_served_signature
from model_api.status import code_name

SERVE_TAG = "serve"  # tensorflow/python/saved_model/tag_constants.py SERVING


class BundleError(Exception):
    """The SavedModel cannot be loaded or a signature cannot be run as TF Serving would.

    `code` is the canonical status name TF Serving reports for the same failure (its
    GetModelStatus shows a failed load with this code)."""

    def __init__(self, message: str, code: str = "INTERNAL"):
        super().__init__(message)
        self.code = code


def _load_error(err: Exception) -> BundleError:
    """The loader's exception -> BundleError with the code tensorflow/cc/saved_model/reader.cc
    and loader.cc return: no saved_model.pb -> NOT_FOUND, an unparsable one -> DATA_LOSS
    ("Can't parse ... as binary proto"), no "serve" MetaGraphDef -> NOT_FOUND, and a
    TensorFlow error (restoring variables, running the init op) -> its own code."""
    import tensorflow as tf

    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    if isinstance(err, tf.errors.OpError):
        return BundleError(message, code_name(err.error_code))
    if isinstance(err, OSError):
        return BundleError(message, "NOT_FOUND" if "does not exist" in message else "DATA_LOSS")
    if isinstance(err, RuntimeError) and "could not be found" in message:
        return BundleError(message, "NOT_FOUND")
    return BundleError(message)


def thread_config(intra_op_parallelism: int = 0, inter_op_parallelism: int = 0):
    """The ConfigProto TF Serving's --tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism
    give every session (model_servers/server.cc sets session_config's *_op_parallelism_threads); 0 is
    TensorFlow's default, one thread per core.

    TensorFlow sizes its pools once per process: the inter-op pool from the first Session's config,
    the intra-op pool from the first CPU device, which the eager runtime creates on its first op. So
    call set_process_threads with the same values before TensorFlow runs anything."""
    import tensorflow as tf

    if intra_op_parallelism < 0 or inter_op_parallelism < 0:
        raise ValueError("intra_op_parallelism and inter_op_parallelism must be >= 0 (0: one thread per core)")
    return tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra_op_parallelism,
                                    inter_op_parallelism_threads=inter_op_parallelism)


def set_process_threads(intra_op_parallelism: int = 0, inter_op_parallelism: int = 0) -> None:
    """Size TensorFlow's process-wide thread pools (tf.config.threading); RuntimeError once the runtime
    has started, when TensorFlow would silently keep the pools it has (checked: a Session's
    intra_op_parallelism_threads is ignored after any eager op)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra_op_parallelism)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op_parallelism)


class SessionBundle:
    """One loaded SavedModel: its SignatureDefs and a Session that runs them.

    `session_config` is a tf.compat.v1.ConfigProto for the Session (TF Serving's
    SessionBundleConfig.session_config), e.g. thread_config(intra, inter); None is TensorFlow's default."""

    def __init__(self, path: str, tags=(SERVE_TAG,), session_config=None):
        import tensorflow as tf

        self.path = path
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph, config=session_config)
        try:
            with self._graph.as_default():
                meta_graph = tf.compat.v1.saved_model.loader.load(self._session, list(tags), path)
        except Exception as err:  # noqa: BLE001 - every load failure becomes one BundleError
            self._session.close()
            raise _load_error(err) from err
        self.meta_graph = meta_graph
        self.signature_defs = dict(meta_graph.signature_def)
        self._closed = threading.Event()
        try:
            self._check_signature_tensors()
        except BundleError:
            self.close()  # a refused bundle must not keep its Session (and graph) alive
            raise

    def _check_signature_tensors(self) -> None:
        """Every tensor a SignatureDef names must exist in the graph (TF Serving fails the request)."""
        for name, signature in self.signature_defs.items():
            if not is_served_signature(name):
                continue
            for kind, infos in (("input", signature.inputs), ("output", signature.outputs)):
                for alias, info in infos.items():
                    try:
                        self._graph.get_tensor_by_name(info.name)
                    except (KeyError, ValueError) as err:
                        self._session.close()
                        raise BundleError(f"signature {name!r} {kind} {alias!r} names tensor {info.name!r}, "
                                          f"which is not in the graph: {err}") from None

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
            output_filter: list[str] | None = None) -> dict[str, np.ndarray]:
        """Feed `inputs` (alias -> array) by tensor name, fetch the outputs by tensor name.

        Raises tf.errors.OpError from the graph (e.g. InvalidArgumentError for a corrupt
        image) exactly as TF Serving's Session::Run reports it.
        """
        signature = self.signature_defs[signature_name]
        feeds = {signature.inputs[alias].name: value for alias, value in inputs.items()}
        aliases = sorted(output_filter or signature.outputs.keys())  # predict_util.cc sorts them
        values = self.run_tensors(feeds, [signature.outputs[alias].name for alias in aliases])
        return {alias: values[signature.outputs[alias].name] for alias in aliases}

    def run_tensors(self, feeds: Mapping[str, np.ndarray], fetches) -> dict[str, np.ndarray]:
        """Session::Run: tensor name -> array in, fetched tensor name -> array out."""
        fetches = list(fetches)
        return dict(zip(fetches, self._session.run(fetches, feed_dict=dict(feeds))))

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._session.close()

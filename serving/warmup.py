"""SavedModel warmup: replay assets.extra/tf_serving_warmup_requests before a version serves
(tensorflow_serving/servables/tensorflow/saved_model_warmup.cc, which also calls RunPredict)."""
from __future__ import annotations

import os

from model_api import signature as sig
from serving.predict_util import run_predict
from serving.servable import Servable


def replay_warmup(servable: Servable) -> int:
    """Run every PredictionLog's request; the first failure fails the load. Returns the count."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(servable.path, sig.WARMUP_FILE)
    if not os.path.exists(path):
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(path):
        log_entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if log_entry.HasField("predict_log"):
            run_predict(servable, log_entry.predict_log.request)
            count += 1
    return count

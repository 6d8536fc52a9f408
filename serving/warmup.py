"""SavedModel warmup: replay assets.extra/tf_serving_warmup_requests before a version serves
(tensorflow_serving/servables/tensorflow/saved_model_warmup.cc and saved_model_warmup_util.cc,
which also call RunPredict). Any failure fails the load, as in TF Serving."""
from __future__ import annotations

import os

from model_api import signature as sig
from serving.errors import invalid_argument
from serving.predict_util import run_predict
from serving.servable import Servable

MAX_NUM_RECORDS = 1000  # WarmupConsts::kMaxNumRecords


def replay_warmup(servable: Servable) -> int:
    """Run every PredictionLog's request, in order; returns how many ran."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(servable.path, sig.WARMUP_FILE)
    if not os.path.exists(path):
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(path):
        try:
            log_entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        except DecodeError:
            raise invalid_argument(f"Failed to parse warmup record from {path}") from None
        kind = log_entry.WhichOneof("log_type")
        if kind != "predict_log":  # TF Serving also replays classify/regress/multi_inference logs
            raise invalid_argument(f"Unsupported log_type for warmup: {kind} (the local server replays predict "
                                   "logs only)")
        run_predict(servable, log_entry.predict_log.request)
        count += 1
        if count > MAX_NUM_RECORDS:
            raise invalid_argument(f"Number of warmup records exceeds the maximum ({MAX_NUM_RECORDS}) at {path}")
    return count

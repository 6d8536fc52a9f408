"""SavedModel warmup: replay assets.extra/tf_serving_warmup_requests before a version serves
(tensorflow_serving/servables/tensorflow/saved_model_warmup.cc and saved_model_warmup_util.cc,
which also call RunPredict). Any failure fails the load, as in TF Serving."""
from __future__ import annotations

import os

from model_api import signature as sig
from model_api.warmup import MAX_NUM_RECORDS, WarmupError, read_predict_requests
from serving.errors import invalid_argument
from serving.predict_util import run_predict
from serving.servable import Servable


def replay_warmup(servable: Servable) -> int:
    """Run every PredictionLog's request, in order; returns how many ran."""
    try:
        requests = read_predict_requests(os.path.join(servable.path, sig.WARMUP_FILE), MAX_NUM_RECORDS)
    except WarmupError as err:
        raise invalid_argument(str(err)) from None
    for request in requests:
        run_predict(servable, request)
    return len(requests)

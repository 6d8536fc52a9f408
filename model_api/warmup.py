"""Reading a version's warmup records the way TF Serving does.

TF Serving replays assets.extra/tf_serving_warmup_requests before a version serves
(tensorflow_serving/servables/tensorflow/saved_model_warmup.cc, saved_model_warmup_util.cc):
a TFRecord file of PredictionLogs, at most WarmupConsts::kMaxNumRecords of them; a record
that does not parse, or too many records, fails the load. The local server (serving/warmup.py)
and the export gate (publishing/gate.py) both read them here.
"""
from __future__ import annotations

MAX_NUM_RECORDS = 1000  # WarmupConsts::kMaxNumRecords (saved_model_warmup_util.h)


class WarmupError(Exception):
    """The warmup file cannot be replayed; TF Serving would refuse to load the version."""


def read_predict_requests(path: str, max_records: int | None = None) -> list:
    """The PredictRequests of `path`, in order; [] when there is no warmup file.

    Raises WarmupError, with TF Serving's wording, for an unparsable record, a log type other
    than predict_log (the only kind this project writes and the local server replays), or more
    than `max_records` records.
    """
    import tensorflow as tf
    from google.protobuf.message import DecodeError
    from tensorflow_serving.apis import prediction_log_pb2

    limit = MAX_NUM_RECORDS if max_records is None else max_records
    if not tf.io.gfile.exists(path):
        return []
    requests = []
    for number, record in enumerate(tf.data.TFRecordDataset(path), start=1):
        if number > limit:
            raise WarmupError(f"Number of warmup records exceeds the maximum ({limit}) at {path}")
        try:
            log_entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        except DecodeError:
            raise WarmupError(f"Failed to parse warmup record {number} from {path}: "
                              "not a PredictionLog") from None
        kind = log_entry.WhichOneof("log_type")
        if kind != "predict_log":  # TF Serving also replays classify/regress/multi_inference logs
            raise WarmupError(f"Unsupported log_type for warmup: {kind} in record {number} (only predict logs "
                              "are written and replayed here)")
        requests.append(log_entry.predict_log.request)
    return requests

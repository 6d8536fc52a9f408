"""Exported warmup records under server-side batching: a version loads at any max_batch_size.

TF Serving replays assets.extra/tf_serving_warmup_requests through the batching session
(saved_model_bundle_source_adapter.cc runs RunSavedModelWarmup on the bundle that
saved_model_bundle_factory.cc wrapped), so a record larger than max_batch_size fails the load."""
import numpy as np
import pytest

from model_api import signature as sig
from model_api.warmup import read_predict_requests
from serving.batching import BatchingOptions, BatchScheduler
from serving.errors import ServingError
from serving.servable import Servable
from serving.warmup import replay_warmup


def warmup_sizes(version_dir) -> list[int]:
    import tensorflow as tf

    return [tf.make_ndarray(request.inputs[sig.INPUT_IMAGE_BYTES]).shape[0]
            for request in read_predict_requests(str(version_dir / sig.WARMUP_FILE))]


@pytest.fixture
def batching_of_one():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=1, num_batch_threads=1))
    yield scheduler
    scheduler.stop()


def test_the_exported_warmup_replays_through_batching_at_max_batch_size_1(model_base, batching_of_one):
    version_dir = model_base / "pets" / "1"
    sizes = warmup_sizes(version_dir)
    assert len(sizes) > 1 and set(sizes) == {1}, f"single-image records only, got sizes {sizes}"
    servable = Servable.load("pets", 1, str(version_dir), batching_of_one)
    try:
        assert replay_warmup(servable) == len(sizes)
    finally:
        servable.unload()


def test_a_warmup_record_over_max_batch_size_fails_the_load_as_in_tf_serving(model_base, tmp_path, batching_of_one):
    """What single-image records avoid: a two-image record (the old export wrote one of 8) under max_batch_size 1."""
    import shutil

    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    copy = tmp_path / "1"
    shutil.copytree(model_base / "pets" / "1", copy)
    request = read_predict_requests(str(copy / sig.WARMUP_FILE))[0]
    request.inputs[sig.INPUT_IMAGE_BYTES].CopyFrom(
        tf.make_tensor_proto([request.inputs[sig.INPUT_IMAGE_BYTES].string_val[0]] * 2, dtype=tf.string))
    with tf.io.TFRecordWriter(str(copy / sig.WARMUP_FILE)) as writer:
        writer.write(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
    servable = Servable.load("pets", 1, str(copy), batching_of_one)
    try:
        with pytest.raises(ServingError, match="Task size 2 is larger than maximum input batch size 1"):
            replay_warmup(servable)
    finally:
        servable.unload()


def test_a_registry_with_batching_at_max_batch_size_1_serves_the_exported_model(model_base):
    """The local server's load path (registry: load, replay warmup, serve) with --enable_batching."""
    from tensorflow_serving.apis import model_pb2

    from serving.registry import ModelRegistry, single_model_config

    registry = ModelRegistry([single_model_config("pets", str(model_base / "pets"))], poll_seconds=60,
                             batching=BatchingOptions(max_batch_size=1, num_batch_threads=1))
    try:
        registry.start()  # StartupError if the version failed to load
        spec = model_pb2.ModelSpec(name="pets")
        assert [(version, status.error_code) for version, status in registry.statuses(spec)] == [(1, 0)]
        servable = registry.resolve(spec)
        outputs = servable.run(sig.SERVING_DEFAULT, {sig.INPUT_IMAGE_BYTES: np.array(
            [read_predict_requests(servable.path + "/" + sig.WARMUP_FILE)[0].inputs[sig.INPUT_IMAGE_BYTES]
             .string_val[0]], dtype=object)})
        assert outputs[sig.OUTPUT_PROBABILITIES].shape == (1, 2)
    finally:
        registry.stop()

"""The servable layer: TF Serving's loader, its error codes, and batching that changes no number."""
import ast
import pathlib
import random
import threading

import numpy as np
import pytest

from model_api.session_bundle import BundleError
from serving.batching import BatchingOptions, BatchScheduler
from serving.servable import Servable
from tests.conftest import REPO, encode, synthetic_photo

# TF's CPU kernels may round the last bits differently for another batch size (9e-6 seen on the
# logits here), with or without this server; rows of the same batch are compared exactly below.
ACROSS_BATCH_SIZES = 1e-5


@pytest.mark.parametrize("content,code", [(None, "NOT_FOUND"), (b"not a SavedModel", "DATA_LOSS")])
def test_a_load_failure_carries_the_loaders_own_code(tmp_path, content, code):
    version = tmp_path / "1"
    version.mkdir()
    if content is not None:
        (version / "saved_model.pb").write_bytes(content)
    with pytest.raises(BundleError) as info:
        Servable.load("pets", 1, str(version))
    assert info.value.code == code


def assert_same_outputs(got: dict, want: dict, atol: float) -> None:
    assert sorted(got) == sorted(want)
    for alias in want:
        if want[alias].dtype == object:
            assert list(got[alias]) == list(want[alias])
        else:
            np.testing.assert_allclose(got[alias], want[alias], rtol=0, atol=atol)


def test_batched_requests_give_the_same_outputs_as_unbatched_ones(model_base):
    rng = random.Random(7)
    images = [encode(synthetic_photo(i % 2, rng)) for i in range(6)]
    path = str(model_base / "pets" / "1")
    plain = Servable.load("pets", 1, path)
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=8, batch_timeout_micros=500_000, num_batch_threads=1,
                                               allowed_batch_sizes=(4, 8)))
    batched = Servable.load("pets", 1, path, scheduler)
    try:
        # One request of 6, padded to 8 with copies of its first image: exactly the plain run of those 8 rows.
        padded = np.array(images + [images[0]] * 2, dtype=object)
        want = {alias: value[:6] for alias, value in plain.run("serving_default", {"image_bytes": padded}).items()}
        assert_same_outputs(batched.run("serving_default", {"image_bytes": np.array(images, dtype=object)}), want,
                            atol=0)
        expected = [plain.run("serving_default", {"image_bytes": np.array([image], dtype=object)})
                    for image in images]
        answers = [None] * len(images)

        def one(i):
            answers[i] = batched.run("serving_default", {"image_bytes": np.array([images[i]], dtype=object)})

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(images))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        batched.unload()
        scheduler.stop()
    for want, got in zip(expected, answers):
        assert_same_outputs(got, want, atol=ACROSS_BATCH_SIZES)


# --- layering: servable < registry < handlers < front ends -------------------------------------

LAYERS = [
    {"errors", "config_protos", "version_policy"},
    {"batching", "config_reload", "monitoring"},
    {"servable"},
    {"predict_util"},
    {"warmup", "json_tensor"},
    {"registry"},
    {"handlers", "rest_json"},
    {"grpc_server", "rest_server"},
    {"server"},
    {"__main__"},
]


def _serving_imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("serving"):
            names |= {node.module.split(".")[1]} if "." in node.module else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("serving.")}
    return names


def test_serving_modules_only_import_lower_layers():
    level = {module: i for i, layer in enumerate(LAYERS) for module in layer}
    files = sorted(p for p in (REPO / "serving").glob("*.py") if p.stem != "__init__")
    assert {p.stem for p in files} == set(level), "every serving module has a layer"
    for path in files:
        for imported in _serving_imports(path):
            assert level[imported] < level[path.stem], f"serving/{path.name} imports higher layer {imported}"


# --- warmup --------------------------------------------------------------------------------------

def write_warmup(version_dir: pathlib.Path, logs) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(version_dir / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        for log in logs:
            writer.write(log.SerializeToString())


def warmup_copy(model_base, tmp_path) -> pathlib.Path:
    import shutil

    copy = tmp_path / "1"
    shutil.copytree(model_base / "pets" / "1", copy)
    return copy


def test_warmup_replays_predict_logs_and_refuses_more_than_tf_servings_maximum(model_base, tmp_path, monkeypatch):
    from tensorflow_serving.apis import prediction_log_pb2

    from serving import warmup
    from serving.errors import ServingError

    copy = warmup_copy(model_base, tmp_path)
    servable = Servable.load("pets", 1, str(copy))
    assert warmup.replay_warmup(servable) > 0, "the exporter writes warmup records"
    monkeypatch.setattr(warmup, "MAX_NUM_RECORDS", 1)
    with pytest.raises(ServingError, match=r"Number of warmup records exceeds the maximum \(1\)"):
        warmup.replay_warmup(servable)
    write_warmup(copy, [prediction_log_pb2.PredictionLog(classify_log={})])
    with pytest.raises(ServingError, match="Unsupported log_type for warmup: classify_log"):
        warmup.replay_warmup(servable)


def test_an_output_filter_is_batched_in_its_own_queue_and_refused_over_max_batch_size(model_base):
    # batching_session.cc InternalRun: a Run() whose feeds and fetches match no SignatureDef gets its own
    # queue from the default scheduler creator (bundle_factory_util.cc WrapSessionForBatching).
    from serving.errors import ServingError

    rng = random.Random(3)
    images = np.array([encode(synthetic_photo(i % 2, rng)) for i in range(3)], dtype=object)
    path = str(model_base / "pets" / "1")
    plain = Servable.load("pets", 1, path)
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=2, num_batch_threads=1))
    batched = Servable.load("pets", 1, path, scheduler)
    try:
        with pytest.raises(ServingError) as info:
            batched.run("serving_default", {"image_bytes": images}, output_filter=["classes"])
        assert (info.value.code.name, info.value.message) == (
            "INVALID_ARGUMENT", "Task size 3 is larger than maximum input batch size 2")
        got = batched.run("serving_default", {"image_bytes": images[:2]}, output_filter=["classes", "labels"])
        assert sorted(got) == ["classes", "labels"]
        assert_same_outputs(got, plain.run("serving_default", {"image_bytes": images[:2]}, ["classes", "labels"]),
                            atol=0)
        batched.run("serving_default", {"image_bytes": images[:1]}, output_filter=["labels", "classes"])
        batched.run("serving_default", {"image_bytes": images[:1]})
        # {classes}, {classes, labels} in either order, and every output.
        assert len(batched.queues) == 3, "one queue per set of fetched tensors, whatever their order"
    finally:
        batched.unload()
        scheduler.stop()


def test_an_unloaded_version_closes_its_session_when_its_last_request_lets_go(model_base, monkeypatch):
    import gc
    import weakref

    from model_api.session_bundle import SessionBundle

    closed = []
    real_close = SessionBundle.close
    monkeypatch.setattr(SessionBundle, "close", lambda bundle: closed.append(bundle) or real_close(bundle))
    rng = random.Random(5)
    feed = {"image_bytes": np.array([encode(synthetic_photo(0, rng))], dtype=object)}
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=4, num_batch_threads=1))
    gc.disable()  # only reference counting: a cycle through the servable would keep it (and its Session)
    try:
        servable = Servable.load("pets", 1, str(model_base / "pets" / "1"), scheduler)
        servable.run("serving_default", feed)  # batched: the servable now has a queue
        servable.run("serving_default", feed, output_filter=["classes"])  # and a second one
        in_flight = servable  # a request still holding the version
        servable.unload()
        gone = weakref.ref(servable)
        del servable
        assert closed == [], "a request still holds the version"
        assert in_flight.run("serving_default", feed)["classes"].shape == (1,)
        del in_flight
        assert gone() is None, "nothing but requests kept the servable alive"
        assert len(closed) == 1, "its Session was closed with the last reference"
    finally:
        gc.enable()
        scheduler.stop()


# --- session config (--tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism) ------

def test_a_session_config_reaches_the_session_and_changes_no_number(model_base):
    from model_api.session_bundle import thread_config

    rng = random.Random(9)
    feed = {"image_bytes": np.array([encode(synthetic_photo(i % 2, rng)) for i in range(3)], dtype=object)}
    path = str(model_base / "pets" / "1")
    plain = Servable.load("pets", 1, path)
    configured = Servable.load("pets", 1, path, session_config=thread_config(1, 1))
    session_config = configured.bundle._session._config  # what TensorFlow's Session was given
    assert (session_config.intra_op_parallelism_threads, session_config.inter_op_parallelism_threads) == (1, 1)
    assert_same_outputs(configured.run("serving_default", feed), plain.run("serving_default", feed), atol=0)


def test_thread_counts_are_refused_when_negative_or_once_tensorflow_has_started():
    import tensorflow as tf

    from model_api.session_bundle import set_process_threads, thread_config

    with pytest.raises(ValueError, match="must be >= 0"):
        thread_config(-1, 0)
    tf.constant(1.0) + 1  # the runtime has started: its pools are sized
    current = tf.config.threading.get_intra_op_parallelism_threads()
    with pytest.raises(RuntimeError, match="cannot be modified after initialization"):
        set_process_threads(current + 1, 0)

"""Two workers on 127.0.0.1, each with its own TF_CONFIG, run the real training job under
MultiWorkerMirroredStrategy: they finish with identical weights, only the chief writes the
run's outputs and exports, --mixed-precision trains as far as float32 does, and --dropout drops."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.conftest import REPO, TINY_IMG, free_port, make_image_folder, tiny_classifier


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiworker")
    folder = make_image_folder(root / "photos", per_class=16)
    # Calibrated BN statistics make the features vary, so training really moves the weights.
    weights = root / "calibrated.weights.h5"
    tiny_classifier().base.save_weights(weights)
    return root, folder, weights


def _two_workers(root, folder, weights, name, *extra):
    work, models = root / name / "work", root / name / "models"
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    # The tutorial's learning rates: at 100x them fine-tuning diverges and the movement is noise.
    args = ["--data-dir", str(folder), "--weights", str(weights), "--img-size",
            str(TINY_IMG), "--batch-size", "8", "--epochs", "2", "--fine-tune-epochs", "1", "--work-dir", str(work),
            "--model-base-path", str(models), "--model-name", "pets", *extra]
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        log = open(root / f"{name}-worker-{index}.log", "w")
        workers.append((subprocess.Popen([sys.executable, "-m", "training", *args], cwd=REPO, env=env,
                                         stdout=log, stderr=subprocess.STDOUT), log))
    for process, log in workers:
        process.wait(timeout=900)
        log.close()
    logs = [(root / f"{name}-worker-{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p, _ in workers] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    return work, models, logs


def _load(path):
    import training.model  # noqa: F401  registers the custom model class

    return keras.models.load_model(path)


def _assert_identical(chief, other):
    assert len(chief) == len(other)
    for a, b in zip(chief, other):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _movement(model, weights_file) -> float:
    """L2 norm of how far training moved every weight of the base from the weights file."""
    base = tiny_classifier().base
    base.load_weights(weights_file)
    trained = model.get_layer(base.name).get_weights()
    return float(np.sqrt(sum(np.sum((np.asarray(a, np.float64) - b) ** 2)
                             for a, b in zip(trained, base.get_weights()))))


@pytest.fixture(scope="module")
def float32_run(setup):
    return _two_workers(*setup, "float32")


def test_two_workers_train_identically_and_only_the_chief_exports(setup, float32_run):
    _, _, weights = setup
    work, models, logs = float32_run
    # The chief (worker 0) wrote the run's outputs and published version 1; worker 1 wrote only
    # into its scratch folder and published nothing.
    assert (work / "metrics.json").exists() and (models / "pets" / "1" / "saved_model.pb").exists()
    assert [n for n in os.listdir(models / "pets") if not n.startswith(".")] == ["1"]
    assert "[export] published" in logs[0] and "[export]" not in logs[1]
    scratch = work / "workers" / "worker-1"
    assert (scratch / "model.keras").exists()
    # Each worker cached only its own shard of every split.
    assert sorted(p.name for p in (work / "caches").glob("*-train-shard*.json")) == \
        ["features-block_10_project_BN-train-shard0of2.json", "trunk-block_10_project_BN-train-shard0of2.json"]
    assert sorted(p.name for p in (scratch / "caches").glob("*-train-shard*.json")) == \
        ["features-block_10_project_BN-train-shard1of2.json", "trunk-block_10_project_BN-train-shard1of2.json"]

    trained = _load(work / "model.keras")
    _assert_identical(trained.get_weights(), _load(scratch / "model.keras").get_weights())
    assert _movement(trained, weights) > 1e-3, "fine-tuning must move the base"
    history = json.loads((work / "metrics.json").read_text())["phases"]
    assert len(history["feature_extraction"]["history"]["loss"]) == 2
    assert len(history["fine_tuning"]["history"]["loss"]) == 1


def test_mixed_precision_on_two_workers_trains_like_float32(setup, float32_run):
    """Comparison: phase 1's per-epoch training loss under mixed_float16 is within 1% of float32's
    (every step applied at loss scale 32768), and fine-tuning moves the base. Without loss
    scaling in the loop the optimizer divides every gradient by 32768 and RMSprop's epsilon
    swallows the small ones (test_the_loop_scales_the_loss_as_keras_does below pins that step)."""
    root, folder, weights = setup
    work, _, logs = _two_workers(root, folder, weights, "mixed", "--mixed-precision")
    trained = _load(work / "model.keras")
    _assert_identical(trained.get_weights(), _load(work / "workers" / "worker-1" / "model.keras").get_weights())
    histories = [json.loads((w / "metrics.json").read_text())["phases"] for w in (work, float32_run[0])]
    mixed_loss, full_loss = (h["feature_extraction"]["history"]["loss"] for h in histories)
    mixed, full = _movement(trained, weights), _movement(_load(float32_run[0] / "model.keras"), weights)
    print(f"\n[mixed precision] phase 1 loss per epoch {mixed_loss} vs float32 {full_loss}; fine-tuning moved "
          f"the base {mixed:.4g} (L2) vs {full:.4g}")
    np.testing.assert_allclose(mixed_loss, full_loss, rtol=1e-2)
    assert mixed > 1e-3, "fine-tuning under mixed precision must move the base"


def test_dropout_on_two_workers_drops_and_trains_identically(setup):
    """Keras' own Dropout before the head: the loop calls the model with training=True, as fit does,
    and the base keeps its BatchNormalization statistics (the movement check above covers training)."""
    root, folder, weights = setup
    work, _, logs = _two_workers(root, folder, weights, "dropout", "--dropout", "0.5", "--no-export")
    trained = _load(work / "model.keras")
    assert isinstance(trained.get_layer("dropout"), keras.layers.Dropout)
    _assert_identical(trained.get_weights(), _load(work / "workers" / "worker-1" / "model.keras").get_weights())
    base = tiny_classifier().base
    base.load_weights(weights)
    bn = trained.get_layer(base.name).get_layer("block_16_project_BN")  # unfrozen in phase 2
    np.testing.assert_array_equal(bn.moving_mean.numpy(), base.get_layer("block_16_project_BN").moving_mean.numpy())
    import tensorflow as tf

    for phase in ("feature_extraction", "fine_tuning"):  # the dropout's random state, saved with every epoch
        reader = tf.train.load_checkpoint(str(work / "checkpoints" / phase))
        states = [reader.get_tensor(key) for key in reader.get_variable_to_shape_map() if key.startswith("random/")]
        assert len(states) == 1 and states[0][1] > 0, f"{phase}: the dropout must have drawn masks in training steps"


LOOP_CHECK = """
import json, numpy as np, keras, tensorflow as tf
from training.loops import MultiWorkerLoop
keras.mixed_precision.set_global_policy("mixed_float16")
strategy = tf.distribute.MultiWorkerMirroredStrategy()  # one local worker, the real loop code
x = (np.random.default_rng(0).normal(size=(8, 4)) * 1e-4).astype("float32")  # small gradients
y = np.array([0, 1] * 4)
def model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    m = keras.Model(inputs, keras.layers.Dense(1, dtype="float32")(keras.layers.Dense(3)(inputs)))
    m.compile(optimizer=keras.optimizers.RMSprop(1e-2), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return m
with strategy.scope():
    looped = model()
    before = [w.copy() for w in looped.get_weights()]
    MultiWorkerLoop(looped, 2, 8, strategy).train_epoch(tf.data.Dataset.from_tensor_slices((x, y)).batch(8))
unscaled = model()  # what the loop did before: gradients of the unscaled loss
with tf.GradientTape() as tape:
    loss = tf.reduce_mean(keras.losses.binary_crossentropy(y.reshape(-1, 1), unscaled(x), from_logits=True))
unscaled.optimizer.apply_gradients(zip(tape.gradient(loss, unscaled.trainable_variables),
                                       unscaled.trainable_variables))
reference = model()  # Keras' own train_step: scale_loss, then the LossScaleOptimizer unscales
reference.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
def moved(m):
    return float(max(np.max(np.abs(a - b)) for a, b in zip(m.get_weights(), before)))
print(json.dumps({"loop": moved(looped), "keras": moved(reference), "unscaled": moved(unscaled),
                  "loop_vs_keras": float(max(np.max(np.abs(a - b))
                                             for a, b in zip(looped.get_weights(), reference.get_weights())))}))
"""


def test_the_loop_scales_the_loss_as_keras_does():
    """One mixed-precision step of the multi-worker loop equals Keras fit's step; the old
    unscaled step (gradients divided by the loss scale) moves the weights far less."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    result = subprocess.run([sys.executable, "-c", LOOP_CHECK], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    moved = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\n[loss scaling] one step moved the weights: loop {moved['loop']:.3g}, Keras fit {moved['keras']:.3g}, "
          f"unscaled {moved['unscaled']:.3g}; loop vs Keras {moved['loop_vs_keras']:.3g}")
    assert moved["loop_vs_keras"] <= 1e-3 * moved["keras"]
    assert moved["unscaled"] < 0.5 * moved["keras"], "the check must be able to tell scaled from unscaled"

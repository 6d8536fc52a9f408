"""The report: learning curves drawn from the epochs each phase really trained, and the accuracy as served."""
from training import report
from training.phases import PhaseResult


def _phase(name, first_epoch, epochs, losses, validation=True):
    history = {"loss": losses, "accuracy": [1 - v for v in losses]}
    if validation:
        history.update(val_loss=[v + 0.1 for v in losses], val_accuracy=[0.9 - v for v in losses])
    return PhaseResult(name=name, first_epoch=first_epoch, epochs=epochs, history=history, seconds=1.0,
                       train_images=10, images_per_second=10.0, test_loss=0.1, test_accuracy=0.9, cached=True,
                       trainable_parameters=1)


def test_a_phase_that_stopped_early_leaves_a_gap_and_phase_two_starts_at_its_own_epoch():
    # --epochs 5 stopped after 3, --fine-tune-epochs 2: phase 2 trained job epochs 6 and 7
    phases = [_phase("feature_extraction", 0, 5, [0.9, 0.8, 0.7]), _phase("fine_tuning", 5, 2, [0.5, 0.4])]
    points = report.curve_points(phases)
    assert points["loss"] == ([1, 2, 3, 6, 7], [0.9, 0.8, 0.7, 0.5, 0.4])
    assert points["val_accuracy"][0] == [1, 2, 3, 6, 7]
    assert report.fine_tuning_line(phases) == 5.5, "between phase 1's last planned epoch and phase 2's first"


def test_each_curve_has_the_epochs_of_its_own_values():
    phases = [_phase("feature_extraction", 0, 2, [0.9, 0.8], validation=False), _phase("fine_tuning", 2, 2, [0.5, 0.4])]
    points = report.curve_points(phases)
    assert points["accuracy"][0] == [1, 2, 3, 4]
    assert points["val_loss"] == ([3, 4], [0.6, 0.5])
    assert report.fine_tuning_line(phases[:1]) is None
    assert report.fine_tuning_line([phases[0], _phase("fine_tuning", 2, 0, [])]) is None


def test_the_figure_is_written(tmp_path):
    phases = [_phase("feature_extraction", 0, 5, [0.9, 0.8, 0.7]), _phase("fine_tuning", 5, 2, [0.5, 0.4])]
    path = report.plot_learning_curves(phases, str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.endswith("curves.png")


def test_figures_and_metrics_replace_what_a_rerun_wrote_on_ram():
    """TF's RamFileSystem appends to an existing file; a resumed job rewrites both."""
    import uuid

    import tensorflow as tf

    work = f"ram://report-{uuid.uuid4().hex[:8]}"
    phases = [_phase("feature_extraction", 0, 2, [0.9, 0.8])]
    path = report.plot_learning_curves(phases, f"{work}/curves.png")
    size = tf.io.gfile.stat(path).length
    report.plot_learning_curves(phases, path)
    assert tf.io.gfile.stat(path).length == size
    for value in (1.5, 2.5):
        report.write_metrics(work, {"test_accuracy": value})
    with tf.io.gfile.GFile(f"{work}/metrics.json") as f:
        assert f.read() == '{\n  "test_accuracy": 2.5\n}'


def _left_minus_right_model(size):
    """One logit: the mean of the left half minus that of the right (class 1 iff the left is brighter)."""
    import keras

    inputs = keras.Input((size, size, 3))
    outputs = keras.layers.Lambda(lambda x: keras.ops.mean(x[:, :, : size // 2], axis=(1, 2, 3))[:, None]
                                  - keras.ops.mean(x[:, :, size // 2:], axis=(1, 2, 3))[:, None])(inputs)
    return keras.Model(inputs, outputs)


def test_accuracy_by_tta_scores_the_served_decision_with_and_without_the_mirror():
    import numpy as np
    import tensorflow as tf

    from training.config import TrainConfig
    from training.data import Datasets, Split

    size = 8
    left_bright = np.zeros((size, size, 3), np.uint8)
    left_bright[:, : size // 2] = 255
    images = np.stack([left_bright, left_bright[:, ::-1]])  # class 1, then its mirror: class 0
    split = Split(tf.data.Dataset.from_tensor_slices((images, np.array([1, 0], np.int64))), count=2)
    empty = Split(tf.data.Dataset.from_tensor_slices((images[:0], np.zeros([0], np.int64))), count=0)
    data = Datasets(train=empty, validation=split, test=split, class_names=["right", "left"], source="test")

    config = TrainConfig(img_size=size, batch_size=1)
    model, batch_sizes = _left_minus_right_model(size), []

    def counted(images, training=False):
        batch_sizes.append(int(images.shape[0]))
        return model(images, training=training)

    accuracies = report.accuracy_by_tta(counted, data, config)
    # The forward is traced (a graph, as served), so this records the traced batch: the image and its mirror.
    assert batch_sizes and set(batch_sizes) == {2}, "one run per batch of 1, on the image and its mirror together"

    # Without TTA both are right; with the flip each image's logit cancels its mirror's: 0, so class 0 for both.
    assert accuracies == {"validation": {"none": 1.0, "flip": 0.5}, "test": {"none": 1.0, "flip": 0.5}}


def _metrics_of_a_run(config, none=0.90, flip=0.95):
    from training.data import Datasets, Split

    empty = Split(images=None, count=0)
    data = Datasets(train=empty, validation=empty, test=empty, class_names=["a", "b"], source="test",
                    identity={"fingerprint": "sha256:x"})
    by_tta = {"validation": {"none": 0.8, "flip": 0.85}, "test": {"none": none, "flip": flip}}
    return report.build_metrics(config, data, [_phase("feature_extraction", 0, 1, [0.5])], {"accuracy_by_tta": by_tta})


def test_the_served_accuracy_is_the_accuracy_with_the_exported_tta():
    from model_api import decision
    from training.config import TrainConfig

    flip = _metrics_of_a_run(TrainConfig(tta="flip"))
    assert flip["served"] == {"tta": "flip", "validation_accuracy": 0.85, "test_accuracy": 0.95}
    assert decision.served_accuracy(flip, "none") == 0.90 and decision.served_accuracy(flip, "flip") == 0.95
    assert flip["data"]["identity"] == {"fingerprint": "sha256:x"}
    unmeasured = {"phases": {"fine_tuning": {"test_accuracy": 0.7}}}  # a run without accuracy_by_tta
    assert decision.served_accuracy(unmeasured, "none") == 0.7 and decision.served_accuracy(unmeasured, "flip") is None


def test_the_gate_checks_the_accuracy_as_served_on_the_data_that_was_tested(tmp_path):
    import pytest

    from publishing import gate
    from training.config import TrainConfig
    from training.export import for_run

    config = TrainConfig(tta="flip", min_accuracy=0.93, data_dir=str(tmp_path))
    run_gate = for_run(config, _metrics_of_a_run(config))
    assert run_gate.test_accuracy == 0.95 and run_gate.data_identity == {"fingerprint": "sha256:x"}
    assert gate.check_accuracy(run_gate, str(tmp_path / "models"))["test_accuracy"] == 0.95
    plain = TrainConfig(tta="none", min_accuracy=0.93, data_dir=str(tmp_path))
    with pytest.raises(gate.GateFailed, match="test accuracy 0.9000 is below --min-accuracy 0.9300"):
        gate.check_accuracy(for_run(plain, _metrics_of_a_run(plain)), str(tmp_path / "models"))

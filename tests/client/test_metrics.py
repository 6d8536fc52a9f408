"""The evaluation's statistics against values computed by hand."""
import math

import pytest

from client.evaluation import metrics


def test_wilson_interval_matches_the_textbook_values():
    low, high = metrics.wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.49016, 0.94332), abs=1e-5)
    z2 = metrics.Z_95 ** 2
    assert metrics.wilson_interval(0, 5) == pytest.approx((0.0, z2 / (5 + z2)))   # stays inside [0, 1]
    assert metrics.wilson_interval(5, 5) == pytest.approx((5 / (5 + z2), 1.0))
    assert metrics.wilson_interval(0, 0) is None


def test_accuracy_of_nothing_is_undefined_not_zero():
    assert metrics.Accuracy.of(0, 0) == metrics.Accuracy(0, 0, None, None)
    assert metrics.Accuracy.of(3, 4).value == 0.75


# Four cats, four dogs; one cat answered "bird", a class with no image (no support).
TRUE = ["cat", "cat", "cat", "cat", "dog", "dog", "dog", "dog"]
ANSWER = ["cat", "cat", "dog", "bird", "dog", "dog", "dog", "cat"]
CLASSES = ["cat", "dog", "bird"]


def test_confusion_matrix_has_true_classes_in_rows_and_answers_in_columns():
    assert metrics.confusion_matrix(TRUE, ANSWER, CLASSES) == [[2, 1, 1], [1, 3, 0], [0, 0, 0]]


def test_per_class_precision_recall_f1_and_a_class_without_support():
    per_class = metrics.per_class_metrics(metrics.confusion_matrix(TRUE, ANSWER, CLASSES), CLASSES)
    cat, dog, bird = per_class["cat"], per_class["dog"], per_class["bird"]
    assert (cat.precision, cat.recall, cat.support, cat.predicted) == (pytest.approx(2 / 3), 0.5, 4, 3)
    assert cat.f1 == pytest.approx(4 / 7)
    assert (dog.precision, dog.recall, dog.f1, dog.support) == (0.75, 0.75, pytest.approx(0.75), 4)
    assert (bird.precision, bird.recall, bird.f1, bird.support, bird.predicted) == (0.0, None, None, 0, 1)
    macro = metrics.macro_average(per_class)  # over the classes with images only
    assert macro == pytest.approx({"precision": 17 / 24, "recall": 0.625, "f1": 37 / 56})


def test_a_class_never_answered_has_no_precision():
    per_class = metrics.per_class_metrics(metrics.confusion_matrix(["a", "b"], ["a", "a"], ["a", "b"]), ["a", "b"])
    assert (per_class["b"].precision, per_class["b"].recall, per_class["b"].f1) == (None, 0.0, None)
    assert per_class["a"].f1 == pytest.approx(2 * 0.5 / 1.5)
    assert metrics.macro_average(per_class)["precision"] == pytest.approx(0.25)  # never answered counts as 0


def test_expected_calibration_error_over_ten_bins():
    confidences = [0.95, 0.85, 0.55, 0.65, 1.0, 0.3, 0.7]
    correct = [True, False, True, False, True, False, True]
    result = metrics.calibration(confidences, correct)
    counts = [b.count for b in result.bins]
    # 0.3 and 0.7 are bin edges (0.3 * 10 is 3.0000000000000004 in floating point): left-closed bins.
    assert counts == [0, 0, 0, 1, 0, 1, 1, 1, 1, 2]
    assert result.bins[9].accuracy == 1.0 and result.bins[9].confidence == pytest.approx(0.975)
    assert result.bins[0].accuracy is None and result.bins[0].confidence is None
    gaps = 2 * 0.025 + 0.85 + 0.45 + 0.65 + 0.3 + 0.3  # count * |accuracy - confidence| per bin
    assert result.ece == pytest.approx(gaps / 7)
    assert metrics.calibration([], []).ece is None


def test_mcnemar_exact_is_a_two_sided_binomial_test_of_the_disagreements():
    assert metrics.mcnemar_exact(9, 1) == pytest.approx(2 * (1 + 10) / 2 ** 10)
    assert metrics.mcnemar_exact(1, 9) == metrics.mcnemar_exact(9, 1)
    assert metrics.mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert metrics.mcnemar_exact(5, 5) == 1.0 and metrics.mcnemar_exact(0, 0) == 1.0
    # 2,000 disagreements: exact integers, then one division, stay finite
    assert 0 < metrics.mcnemar_exact(900, 1100) < 1e-5
    assert math.isclose(metrics.mcnemar_exact(1000, 999), 1.0)


def test_the_statistics_and_the_evaluation_cli_import_neither_tensorflow_nor_the_training_code():
    import subprocess
    import sys

    probe = ("import sys, client.evaluation.metrics; heavy = {'tensorflow', 'matplotlib'} & set(sys.modules); "
             "assert not heavy, heavy; import client.__main__, client.evaluation.evaluate, client.evaluation.compare; "
             "bad = [m for m in sys.modules if m.split('.')[0] in ('training', 'tensorflow', 'matplotlib')]; "
             "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

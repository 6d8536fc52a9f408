"""The accuracy study's rows and its choice: validation decides, test never does."""
import pytest

from tests.bench.conftest import load_script


@pytest.fixture(scope="module")
def study():
    return load_script("accuracy_study")


def _run(validation, test, tta_validation=None, tta_test=None, seconds=100.0):
    phase = {"validation_accuracy": validation, "test_accuracy": test, "seconds": 10.0, "history": {"loss": [1.0]}}
    metrics = {"phases": {"feature_extraction": phase, "fine_tuning": phase}}
    if tta_validation is not None:
        metrics["accuracy_by_tta"] = {"validation": {"none": validation, "flip": tta_validation},
                                      "test": {"none": test, "flip": tta_test}}
    return {"metrics": metrics, "wall": {"seconds": seconds, "resumed": False}}


def test_a_recipe_gives_a_tta_row_scored_as_served_with_the_flip(study):
    rows = study.recipe_rows("flip-es", [_run(0.97, 0.96, 0.98, 0.95), _run(0.95, 0.94, 0.96, 0.93)])
    assert [row["recipe"] for row in rows] == ["flip-es", "flip-es+tta"]
    assert rows[1]["flags"] == " ".join(study.RECIPES["flip-es"]) + " --tta flip"
    assert rows[0]["validation_accuracy"][0] == pytest.approx(0.96)
    assert rows[1]["validation_accuracy"][0] == pytest.approx(0.97)
    assert rows[1]["test_accuracy"][0] == pytest.approx(0.94)


def test_runs_without_accuracy_by_tta_give_no_tta_row(study):
    rows = study.recipe_rows("flip-es", [_run(0.97, 0.96, 0.98, 0.95), _run(0.95, 0.94)])
    assert [row["recipe"] for row in rows] == ["flip-es"]


def test_the_choice_follows_validation_not_test_within_the_time_limit(study):
    rows = [*study.recipe_rows("tutorial", [_run(0.96, 0.99, 0.965, 0.99)]),
            *study.recipe_rows("flip-es", [_run(0.97, 0.90, 0.98, 0.90, seconds=150.0)]),
            *study.recipe_rows("flip-es-224", [_run(0.99, 0.90, 0.995, 0.90, seconds=250.0)])]
    assert study.choose(rows, max_time_ratio=2.0)["recipe"] == "flip-es+tta"  # 224 is too slow: 2.5x
    assert study.choose(rows, max_time_ratio=3.0)["recipe"] == "flip-es-224+tta"


def test_the_flags_of_a_tta_row_are_its_recipes_and_the_flip(study):
    assert study.flags_of("tutorial+tta") == ["--tta", "flip"]
    assert study.flags_of("tutorial") == []


def test_a_validation_tie_goes_to_the_faster_recipe_whatever_the_order(study):
    slow = study.recipe_rows("flip-es-224-ft5", [_run(0.99, 0.99, seconds=140.0), _run(0.98, 0.99, seconds=140.0)])
    fast = study.recipe_rows("es-224-ft5", [_run(0.98, 0.90, seconds=110.0), _run(0.99, 0.90, seconds=110.0)])
    baseline = study.recipe_rows("tutorial", [_run(0.96, 0.96)])
    assert study.choose([*baseline, *slow, *fast], max_time_ratio=1.5)["recipe"] == "es-224-ft5"
    assert study.choose([*baseline, *fast, *slow], max_time_ratio=1.5)["recipe"] == "es-224-ft5"

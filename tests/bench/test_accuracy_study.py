"""The accuracy study's rows and its choice: validation decides, test never does."""
import pytest

from tests.bench.conftest import load_script


@pytest.fixture(scope="module")
def study():
    return load_script("accuracy_study")


def _run(validation, test, tta_validation=None, tta_test=None, seconds=100.0, machine_seconds=None):
    phase = {"validation_accuracy": validation, "test_accuracy": test, "seconds": 10.0, "history": {"loss": [1.0]}}
    metrics = {"phases": {"feature_extraction": phase, "fine_tuning": phase}}
    if tta_validation is not None:
        metrics["accuracy_by_tta"] = {"validation": {"none": validation, "flip": tta_validation},
                                      "test": {"none": test, "flip": tta_test}}
    wall = {"seconds": seconds, "resumed": False}
    if machine_seconds is not None:
        wall["machine_seconds"] = machine_seconds
    return {"metrics": metrics, "wall": wall}


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


def test_a_recipe_timed_on_a_machine_of_another_speed_than_the_tutorials_is_not_chosen(study):
    baseline = study.recipe_rows("tutorial", [_run(0.96, 0.96, machine_seconds=1.0)])
    fast_machine = study.recipe_rows("es-288-at116", [_run(0.99, 0.99, seconds=140.0, machine_seconds=0.6)])
    same_machine = study.recipe_rows("es-224-at116", [_run(0.98, 0.98, seconds=110.0, machine_seconds=1.1)])
    rows = [*baseline, *fast_machine, *same_machine]
    assert study.choose(rows, max_time_ratio=1.5)["recipe"] == "es-224-at116"
    assert [line.split(":")[0] for line in study.timing_mismatches(rows)] == ["es-288-at116"]
    assert "0.60x" in study.timing_mismatches(rows)[0]


def test_a_calibrated_recipe_is_not_compared_with_an_uncalibrated_tutorial(study):
    baseline = study.recipe_rows("tutorial", [_run(0.96, 0.96)])
    calibrated = study.recipe_rows("es-224-at116", [_run(0.99, 0.99, seconds=110.0, machine_seconds=1.0)])
    uncalibrated = study.recipe_rows("flip-es", [_run(0.98, 0.98, seconds=110.0)])
    rows = [*baseline, *calibrated, *uncalibrated]
    assert study.choose(rows, max_time_ratio=1.5)["recipe"] == "flip-es"
    assert "only one of it and the tutorial" in study.timing_mismatches(rows)[0]


def test_the_table_marks_a_recipe_whose_time_is_not_comparable(study):
    import argparse
    rows = [*study.recipe_rows("tutorial", [_run(0.96, 0.96, machine_seconds=1.0)]),
            *study.recipe_rows("flip-es", [_run(0.98, 0.98, machine_seconds=2.0)])]
    args = argparse.Namespace(data_dir="d", seeds=[1], max_images=None, epochs=None, fine_tune_epochs=None,
                              max_time_ratio=1.5)
    text = study.table(rows, study.choose(rows, 1.5), args)
    assert "| 1.000 |" in text and "| 2.000 |" in text
    assert "- flip-es: not chosen, its wall time is not comparable" in text


def test_a_run_records_the_machines_speed_beside_its_wall_time(study, tmp_path, monkeypatch):
    import argparse
    import json
    args = argparse.Namespace(out=str(tmp_path), data_dir="d", weights="w", max_images=None, epochs=None,
                              fine_tune_epochs=None)

    def fake_training(command, **kwargs):
        work_dir = command[command.index("--work-dir") + 1]
        with open(f"{work_dir}/metrics.json", "w") as f:
            json.dump(_run(0.9, 0.9)["metrics"], f)

    speeds = iter([1.0, 1.5])
    monkeypatch.setattr(study.subprocess, "run", fake_training)
    monkeypatch.setattr(study, "machine_seconds", lambda: next(speeds))
    run = study.train(args, "tutorial", 1337)
    assert run["wall"]["machine_seconds"] == pytest.approx(1.25)  # before and after, averaged
    assert run["wall"]["resumed"] is False

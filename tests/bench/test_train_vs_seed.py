"""The side-by-side benchmark's table: phase 2 compared per epoch, the whole run by each process's wall time."""
import pytest

from tests.bench.conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("train_vs_seed")


def _job_phase(seconds, epochs, accuracy):
    return {"seconds": seconds, "epochs": epochs, "test_accuracy": accuracy, "cache_seconds": 1.0,
            "train_seconds": seconds - 2.0, "evaluate_seconds": 1.0}


def _table(bench):
    seed = {"phases": [{"seconds": 700.0, "epochs": 10, "test_accuracy": 0.97},
                       {"seconds": 1100.0, "epochs": 11, "test_accuracy": 0.972}],
            "splits": {"train": 4800, "validation": 600, "test": 600}}
    ours = {"feature_extraction": _job_phase(70.0, 10, 0.973), "fine_tuning": _job_phase(200.0, 10, 0.985)}
    return bench.report(ours, seed, job_seconds=300.0, seed_seconds=1830.0, data_dir="photos")


def test_phase_two_is_compared_per_epoch_because_the_tutorial_runs_one_epoch_more(bench):
    line = next(line for line in _table(bench).splitlines() if line.startswith("phase 2"))
    assert line.split()[-2:] == ["5.50x", "5.00x"]  # 1100/200 whole phase; (1100/11)/(200/10) per epoch


def test_the_whole_run_is_the_ratio_of_the_two_processes_wall_times(bench):
    line = next(line for line in _table(bench).splitlines() if line.startswith("whole run"))
    assert line.split()[-1] == "6.10x"
    assert "0.9720" in line and "0.9850" in line  # each side's accuracy after its last phase


def test_the_job_flags_pass_the_shared_settings_and_never_export(bench):
    args = bench.argparse.Namespace(data_dir="photos", weights="w.h5", max_images=0, epochs=10, fine_tune_epochs=10,
                                    fine_tune_at=100, img_size=160, job_flag=["--views=identity,flip"])
    flags = bench.job_flags(args, "/work/job")
    assert flags[flags.index("--work-dir") + 1] == "/work/job"
    assert "--no-export" in flags and flags[-1] == "--views=identity,flip"

import dataclasses

import pytest

from training.config import ConfigError, TrainConfig, build_parser, from_env_and_args


def test_defaults_reproduce_the_tutorial():
    config = from_env_and_args([], environ={})
    assert (config.dataset, config.img_size, config.batch_size, config.shuffle_buffer) == ("cats_vs_dogs", 160, 32, 1000)
    assert (config.train_split, config.validation_split, config.test_split) == (
        "train[:80%]", "train[80%:90%]", "train[90%:]")
    assert (config.learning_rate, config.epochs, config.fine_tune_at, config.fine_tune_epochs) == (1e-4, 10, 100, 10)
    assert config.fine_tune_learning_rate == pytest.approx(1e-5)
    assert config.weights == "imagenet"


def test_flag_beats_environment_which_beats_default():
    environ = {"TRAIN_EPOCHS": "3", "TRAIN_FINE_TUNE_AT": "50", "TRAIN_CACHE": "false"}
    config = from_env_and_args(["--epochs", "5"], environ=environ)
    assert config.epochs == 5
    assert config.fine_tune_at == 50
    assert config.cache is False


def test_bad_environment_value_is_a_clear_error():
    with pytest.raises(ConfigError, match="TRAIN_EPOCHS"):
        from_env_and_args([], environ={"TRAIN_EPOCHS": "many"})


def test_help_names_every_environment_variable():
    text = build_parser().format_help()
    for name in ("TRAIN_DATA_DIR", "TRAIN_WEIGHTS", "TRAIN_FINE_TUNE_EPOCHS", "TRAIN_MODEL_BASE_PATH"):
        assert name in text


def test_model_name_defaults_to_the_data_folder_name(tmp_path):
    assert TrainConfig(data_dir=str(tmp_path / "flowers") + "/").resolved_model_name == "flowers"
    assert TrainConfig(dataset="cats_vs_dogs:4.0.1").resolved_model_name == "cats_vs_dogs"


def test_the_tutorial_recipe_is_every_default():
    assert from_env_and_args(["--recipe", "tutorial"], environ={}) == from_env_and_args([], environ={})
    config = from_env_and_args([], environ={})
    assert (config.views, config.dropout, config.label_smoothing, config.weight_decay) == ("identity", 0, 0, 0)
    assert (config.lr_schedule, config.early_stopping_patience) == ("constant", 0)


def test_the_tuned_recipe_is_the_accuracy_studys_chosen_flags():
    from tests.bench.conftest import load_script

    study = load_script("accuracy_study")
    chosen = from_env_and_args(["--recipe", "tuned", *study.flags_of(study.CHOSEN)], environ={})
    assert from_env_and_args(["--recipe", "tuned"], environ={}) == chosen  # the study's flags add nothing
    tutorial = from_env_and_args(study.flags_of(study.CHOSEN), environ={})
    assert dataclasses.replace(tutorial, recipe="tuned") == chosen  # nor does the recipe add anything else


def test_the_documented_cheap_to_serve_override_of_tuned_is_the_studys_224_px_recipe():
    # README and docs/training.md offer `--recipe tuned --img-size 224 --fine-tune-epochs 10 --tta none`
    # as the study's es-224-at116 (test 0.9839, cheaper to serve).
    from tests.bench.conftest import load_script

    study = load_script("accuracy_study")
    overridden = from_env_and_args(["--recipe", "tuned", "--img-size", "224", "--fine-tune-epochs", "10",
                                    "--tta", "none"], environ={})
    es_224 = from_env_and_args(study.flags_of("es-224-at116"), environ={})
    assert dataclasses.replace(es_224, recipe="tuned") == overridden


def test_a_recipe_sets_values_that_the_environment_and_flags_override(monkeypatch):
    from training import config as config_module

    monkeypatch.setitem(config_module.RECIPES, "trial", {"epochs": 3, "dropout": 0.2, "views": "identity,flip"})
    config = from_env_and_args(["--recipe", "trial"], environ={})
    assert (config.epochs, config.dropout, config.views) == (3, 0.2, "identity,flip")
    config = from_env_and_args(["--recipe", "trial", "--dropout", "0.1"], environ={"TRAIN_EPOCHS": "4"})
    assert (config.epochs, config.dropout) == (4, 0.1)
    assert from_env_and_args([], environ={"TRAIN_RECIPE": "trial"}).epochs == 3
    with pytest.raises(ConfigError, match="unknown --recipe 'fast'; one of tutorial, tuned"):
        from_env_and_args(["--recipe", "fast"], environ={})


@pytest.mark.parametrize("flags, message", [
    (["--views", "identity,spin"], "spin unknown"),
    (["--views", "identity,flip", "--augment"], "cannot be combined"),
    (["--lr-schedule", "linear"], "--lr-schedule must be one of constant, cosine, step"),
    (["--dropout", "1"], r"--dropout must be in \[0, 1\)"),
    (["--early-stopping-patience", "-1"], "cannot be negative"),
    (["--shuffle-buffer", "0"], "--shuffle-buffer must be at least 1"),
    (["--keep", "-1"], "--keep and --version cannot be negative"),
    (["--version", "-2"], "--keep and --version cannot be negative"),
])
def test_bad_settings_are_one_line_errors(flags, message):
    with pytest.raises(ConfigError, match=message):
        from_env_and_args(flags, environ={})


@pytest.mark.parametrize("command", ["training.__main__", "training.export"])
@pytest.mark.parametrize("argv, environ, message", [
    (["--img-size", "8"], {}, "--img-size must be at least 32"),
    ([], {"TRAIN_EPOCHS": "many"}, "TRAIN_EPOCHS='many'"),
    (["--recipe", "fast"], {}, "unknown --recipe 'fast'"),
])
def test_a_configuration_error_exits_2_with_one_line(command, argv, environ, message, monkeypatch, capsys):
    """Exit 2 as argparse's errors do; 1 is what a failed gate or publish returns."""
    import importlib

    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert importlib.import_module(command).main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [err.strip()] and err.startswith("error: ") and message in err, err


def test_one_folder_and_one_view_list_are_one_setting_however_spelt(tmp_path, monkeypatch):
    """Resume and the caches compare stored settings: a spelling must not look like a change."""
    monkeypatch.chdir(tmp_path)
    spellings = ["photos", "photos/", "./photos", str(tmp_path / "photos"), str(tmp_path / "photos") + "//"]
    assert {from_env_and_args(["--data-dir", s], environ={}).data_dir for s in spellings} == {str(tmp_path / "photos")}
    assert from_env_and_args(["--data-dir", "gs://bucket/photos/"], environ={}).data_dir == "gs://bucket/photos/"
    assert {from_env_and_args(["--views", v], environ={}).views
            for v in ("identity,flip", "identity, flip", " identity ,flip,")} == {"identity,flip"}


def test_every_list_of_settings_derives_from_one_tag_per_field():
    """A change that recomputes the frozen outputs changes the mathematics, so resuming must refuse it; what
    identifies the test split is a trained setting, so export-model cannot publish a card for another split."""
    from training import config as c

    every = {f.name: f.metadata["affects"] for f in dataclasses.fields(TrainConfig)}

    def tagged(kind):  # with data of either kind, so that `only=` hides nothing
        return set(c.settings(TrainConfig(), kind)) | set(c.settings(TrainConfig(data_dir="photos"), kind))

    assert tagged(c.CACHE) <= tagged(c.RUN)
    splits = tagged(c.FOLDER_SPLIT) | tagged(c.TFDS_SPLIT)
    assert {"train_split", "validation_split", "test_split", "seed", "max_images"} == splits
    assert splits <= tagged(c.TRAINED) <= tagged(c.RUN)
    assert {name for name, tags in every.items() if tags} >= {"img_size", "batch_size", "dropout", "views"}
    assert not every["work_dir"] and not every["tta"] and not every["epochs"], "neither the mathematics nor the data"


def test_the_split_description_names_the_split_of_each_kind_of_data(tmp_path):
    """Compared with the model card's JSON by the regression gate: stored as JSON holds it."""
    import json

    from training.config import FOLDER_FRACTIONS, split_description

    folder = split_description(TrainConfig(data_dir=str(tmp_path), seed=3))
    assert folder == {"kind": "folder", "fractions": list(FOLDER_FRACTIONS), "seed": 3, "max_images": 0}
    assert json.loads(json.dumps(folder)) == folder
    assert split_description(TrainConfig(test_split="train[95%:]")) == {
        "kind": "tfds", "train": "train[:80%]", "validation": "train[80%:90%]", "test": "train[95%:]", "max_images": 0}


def _trained_metrics(config: TrainConfig, fingerprint="sha256:" + "a" * 64) -> dict:
    return {"config": config.to_dict(), "data": {"identity": {"fingerprint": fingerprint}}}


def test_export_model_refuses_a_split_that_was_never_tested():
    from training.config import check_matches_training

    trained = TrainConfig()
    check_matches_training(trained, _trained_metrics(trained), "w/metrics.json")
    with pytest.raises(ConfigError, match=r"^--test-split train\[95%:\] \(trained: train\[90%:\]\) differ from the "
                                          r"trained run's w/metrics.json"):
        check_matches_training(dataclasses.replace(trained, test_split="train[95%:]"), _trained_metrics(trained),
                               "w/metrics.json")
    folder = TrainConfig(data_dir="/photos", dataset="ignored_with_a_folder")
    check_matches_training(folder, _trained_metrics(TrainConfig(data_dir="/photos")), "w/metrics.json")


def test_export_model_refuses_data_changed_since_it_was_tested():
    from training.config import check_matches_training

    config = TrainConfig(data_dir="/photos")
    metrics = _trained_metrics(config)
    check_matches_training(config, metrics, "w/metrics.json", {"fingerprint": "sha256:" + "a" * 64})
    with pytest.raises(ConfigError, match="^--data-dir content changed since it was tested: fingerprint sha256:a+ "
                                          "in w/metrics.json, sha256:b+ now"):
        check_matches_training(config, metrics, "w/metrics.json", {"fingerprint": "sha256:" + "b" * 64})

"""The training job's one configuration: a typed dataclass whose every field is a flag and a TRAIN_*
variable (flag > environment > recipe > default; the defaults are the tutorial's), tagged with what it affects."""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

from model_api.signature import DEFAULT_MAX_PIXELS
from model_api.versions import is_url

ENV_PREFIX = "TRAIN_"
TTA_CHOICES = ("none", "flip")
LR_SCHEDULES = ("constant", "cosine", "step")
# --views: the deterministic views the caches can hold (what each does: training/pipeline.py).
IDENTITY = "identity"
VIEW_NAMES = (IDENTITY, "flip", "zoom", "zoom-flip")
CONFIG_ERROR_EXIT = 2  # as argparse's usage errors; main's exit 1 means a failed gate or publish


class ConfigError(ValueError):
    """A flag, variable or combination the job cannot run with: `main` prints it as one
    `error: ...` line and exits CONFIG_ERROR_EXIT."""


# --recipe NAME: flag values under the environment and the flags; added only with the accuracy study's
# measured figures (docs/training.md, "Beyond the tutorial"; docs/accuracy-study.md).
RECIPES: dict[str, dict] = {
    "tutorial": {},  # the tutorial exactly: every default
    "tuned": {"img_size": 288, "early_stopping_patience": 3, "fine_tune_at": 116, "fine_tune_epochs": 5,
              "tta": "flip"},
}


# What a setting affects, tagged once on its field (`affects=`); every list of settings derives from the tags.
RUN = "run"                    # a phase's mathematics: resuming refuses a change (training/checkpoints.py)
CACHE = "cache"                # the cached frozen outputs: another value recomputes them (training/frozen_cache.py)
TRAINED = "trained"            # model.keras and its test images: export-model must be given the trained value
FOLDER_SPLIT = "folder split"  # which images an image folder's test split holds (the model card's "split")
TFDS_SPLIT = "tfds split"      # which images a TFDS dataset's test split holds
TFDS_ONLY = "tfds"             # `only=`: the setting means nothing with --data-dir
FOLDER_ONLY = "folder"         # `only=`: the setting means nothing without --data-dir
FOLDER_FRACTIONS = (0.8, 0.1, 0.1)  # an image folder's train/validation/test split


def _setting(default, help_text: str, affects=(), only: str | None = None):
    return field(default=default, metadata={"help": help_text, "affects": frozenset(affects), "only": only})


@dataclass(frozen=True)
class TrainConfig:
    # --- data -----------------------------------------------------------------------------
    dataset: str = _setting("cats_vs_dogs",
                            "TFDS image-classification dataset name (ignored when --data-dir is given).",
                            affects={RUN, CACHE, TRAINED}, only=TFDS_ONLY)
    data_dir: Optional[str] = _setting(None, "Folder with one sub-folder of images per class (2 or more); "
                                             "replaces --dataset. Split 80/10/10 with --seed.",
                                       affects={RUN, CACHE, TRAINED}, only=FOLDER_ONLY)
    tfds_data_dir: Optional[str] = _setting(None, "TFDS data directory (a cache volume); TFDS's default if unset.",
                                            only=TFDS_ONLY)
    train_split: str = _setting("train[:80%]", "TFDS split for training.",
                                affects={RUN, CACHE, TRAINED, TFDS_SPLIT}, only=TFDS_ONLY)
    validation_split: str = _setting("train[80%:90%]", "TFDS split for validation.",
                                     affects={RUN, CACHE, TRAINED, TFDS_SPLIT}, only=TFDS_ONLY)
    test_split: str = _setting("train[90%:]", "TFDS split for the test.",
                               affects={RUN, CACHE, TRAINED, TFDS_SPLIT}, only=TFDS_ONLY)
    max_images: int = _setting(0, "Use at most this many images of the whole dataset before splitting (0 = all); "
                                  "for quick runs.", affects={RUN, CACHE, TRAINED, FOLDER_SPLIT, TFDS_SPLIT})
    seed: int = _setting(1337, "Seed of the data split, shuffling and initialisation.",
                         affects={RUN, CACHE, TRAINED, FOLDER_SPLIT})
    # --- preprocessing ---------------------------------------------------------------------
    img_size: int = _setting(160, "Square input size in pixels (tutorial: 160).", affects={RUN, CACHE, TRAINED})
    batch_size: int = _setting(32, "Global batch size (tutorial: 32).", affects={RUN, CACHE})
    shuffle_buffer: int = _setting(1000, "Shuffle buffer (tutorial: 1000).", affects={RUN})
    augment: bool = _setting(False, "Random flip and rotation as in the newer tutorial; trains end to end (no caches).",
                             affects={RUN})
    views: str = _setting(
        "identity", "Augmentation that keeps the caches: each epoch trains every image in one of these views, drawn "
                    "with the epoch's seed (comma list of identity, flip, zoom, zoom-flip; e.g. identity,flip). Each "
                    "view's frozen outputs are computed once.", affects={RUN})  # each view has its own caches
    # --- model -----------------------------------------------------------------------------
    weights: str = _setting("imagenet", "'imagenet' (downloaded by Keras), 'none' (random), or a path to a Keras "
                                        "weights file for MobileNetV2(include_top=False).", affects={RUN, CACHE})
    # --- phases ----------------------------------------------------------------------------
    learning_rate: float = _setting(1e-4, "RMSprop learning rate of phase 1; phase 2 uses a tenth.", affects={RUN})
    epochs: int = _setting(10, "Phase 1 (feature extraction) epochs.")  # may grow on resume (checkpoints.py)
    fine_tune_epochs: int = _setting(10, "Phase 2 (fine-tuning) epochs; 0 skips phase 2.")
    fine_tune_at: int = _setting(100, "Unfreeze the base from this layer index in phase 2.",
                                 affects={RUN})  # the caches' names hold the cut it implies
    dropout: float = _setting(0.0, "Dropout rate before the head in training steps (the newer tutorial: 0.2); "
                                   "0 = none.", affects={RUN})
    label_smoothing: float = _setting(0.0, "Label smoothing of the cross-entropy (0 = none).", affects={RUN})
    weight_decay: float = _setting(0.0, "Decoupled weight decay of RMSprop (Keras' weight_decay: w -= lr * decay * w "
                                        "each step); 0 = none.", affects={RUN})
    lr_schedule: str = _setting(
        "constant", "Learning rate within each phase: constant, cosine (to ~0 at the phase's end), or step "
                    "(x0.1 after half the phase's epochs, x0.01 after three quarters).", affects={RUN})
    early_stopping_patience: int = _setting(
        0, "Stop a phase after this many epochs without a lower validation loss and restore its best "
           "epoch's weights (0 = off: every epoch, the last weights).", affects={RUN})
    recipe: str = _setting("tutorial", "A named set of the flags above (training/config.py RECIPES: tutorial); "
                                       "explicit flags and TRAIN_* variables override its values.")  # values tagged
    cache: bool = _setting(True, "Train on cached frozen-base outputs (same mathematics, less work); --no-cache runs "
                                 "end to end.", affects={RUN})
    mixed_precision: bool = _setting(False, "mixed_float16 compute (GPUs with tensor cores).", affects={RUN, CACHE})
    # --- outputs ---------------------------------------------------------------------------
    work_dir: str = _setting("work", "Everything the run writes: metrics, figures, checkpoints, logs, caches.")
    restart: bool = _setting(False, "Discard the work dir's checkpoints and train from the first epoch (caches that "
                                    "still match the settings are kept).")
    export: bool = _setting(True, "Export and publish a SavedModel at the end.")
    model_base_path: str = _setting("models", "TF Serving base path to publish into.")
    model_name: Optional[str] = _setting(None, "Model name under the base path (default: the dataset's or data "
                                               "folder's name).")
    version: int = _setting(0, "Version to publish (0 = next after the highest present).")
    min_accuracy: float = _setting(0.0, "Gate: the lowest test accuracy that may be published (as served, with --tta).")
    max_regression: float = _setting(0.01, "Gate: the most test accuracy may drop below the newest published "
                                           "version's.")
    force: bool = _setting(False, "Publish even when the accuracy gate fails (says so).")
    keep: int = _setting(0, "After publishing keep only the newest N versions (0 = keep all).")
    serving_config: Optional[str] = _setting(None, "TF Serving models.config whose version labels --keep must "
                                                   "never remove.")
    max_pixels: int = _setting(DEFAULT_MAX_PIXELS, "Largest decoded image (pixels) the signature accepts; "
                                                   "sized for a 4 GiB serving pod (docs/serving.md).")
    tta: str = _setting("none", "Test-time augmentation inside the exported signature: 'none', or 'flip' (average "
                                "the logits of the image and its horizontal mirror).")

    @property
    def fine_tune_learning_rate(self) -> float:
        return self.learning_rate / 10

    @property
    def resolved_model_name(self) -> str:
        """--model-name, else the data's name: the data folder's base name, or the TFDS dataset name."""
        if self.model_name:
            return self.model_name
        if self.data_dir:
            return os.path.basename(os.path.normpath(self.data_dir))
        return self.dataset.split(":")[0].split("/")[0]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def settings(config: TrainConfig, kind: str) -> dict:
    """{name: value} of the settings affecting `kind` that mean something for this data source."""
    source = FOLDER_ONLY if config.data_dir else TFDS_ONLY
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)
            if kind in f.metadata["affects"] and f.metadata["only"] in (None, source)}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def data_flag(config: TrainConfig) -> str:
    """The flag that names the data: --data-dir or --dataset."""
    return flag("data_dir") if config.data_dir else flag("dataset")


def split_description(config: TrainConfig) -> dict:
    """What identifies the test split, so that accuracies are compared only like for like (the model
    card's "split"; JSON-ready: the fractions are a list, as the card holds them)."""
    if config.data_dir:
        return {"kind": "folder", "fractions": list(FOLDER_FRACTIONS), **settings(config, FOLDER_SPLIT)}
    return {"kind": "tfds", **{name.removesuffix("_split"): value
                               for name, value in settings(config, TFDS_SPLIT).items()}}


def check_matches_training(config: TrainConfig, metrics: dict, metrics_path: str,
                           identity: dict | None = None) -> None:
    """export-model: refuse, in one line, each TRAINED setting that differs from the run's metrics.json
    and, given the data's `identity` as loaded now, data changed since it was tested (docs/training.md)."""
    trained = metrics.get("config", {})
    names = [name for name, value in settings(config, TRAINED).items() if name in trained and value != trained[name]]
    if names:
        differences = ", ".join(f"{flag(name)} {getattr(config, name)} (trained: {trained[name]})" for name in names)
        raise ConfigError(f"{differences} differ from the trained run's {metrics_path}: "
                          "give export-model the training job's flags")
    tested = ((metrics.get("data") or {}).get("identity") or {}).get("fingerprint")
    if identity is not None and identity.get("fingerprint") != tested:
        raise ConfigError(f"{data_flag(config)} content changed since it was tested: fingerprint {tested} in "
                          f"{metrics_path}, {identity.get('fingerprint')} now; train again on the data as it is")


def _env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _field_type(f: dataclasses.Field) -> type:
    return {"bool": bool, "int": int, "float": float}.get(str(f.type), str)  # Optional[str] and str: str


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train-job", description=description or __doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        help_text = f"{f.metadata['help']} [env {_env_name(f.name)}] (default: {f.default})"
        kind = _field_type(f)
        how = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind}
        parser.add_argument(flag(f.name), dest=f.name, default=argparse.SUPPRESS,
                            help=help_text.replace("%", "%%"), **how)  # argparse formats help with %
    return parser


def from_env_and_args(argv: Sequence[str] | None = None, environ: dict | None = None) -> TrainConfig:
    """flags > TRAIN_* environment variables > the recipe's values > defaults."""
    environ = os.environ if environ is None else environ
    flags = vars(build_parser().parse_args(argv))
    recipe = flags.get("recipe", environ.get(_env_name("recipe"), "tutorial"))
    if recipe not in RECIPES:
        raise ConfigError(f"unknown --recipe {recipe!r}; one of {', '.join(RECIPES)}")
    values = dict(RECIPES[recipe])
    for f in dataclasses.fields(TrainConfig):
        raw = environ.get(_env_name(f.name))
        if raw is None:
            continue
        kind = _field_type(f)
        try:
            values[f.name] = _parse_bool(raw) if kind is bool else kind(raw)
        except ValueError as err:
            raise ConfigError(f"{_env_name(f.name)}={raw!r}: {err}") from None
    values.update(flags)
    config = TrainConfig(**values)
    _validate(config)
    return _normalised(config)


def _normalised(config: TrainConfig) -> TrainConfig:
    """Settings compared as stored values (resume, caches) in one spelling each: a local data folder as its
    absolute normal path (`photos` = `photos/` = `./photos`; URLs as given)."""
    changes = {}
    if config.data_dir and not is_url(config.data_dir):
        changes["data_dir"] = os.path.normpath(os.path.abspath(config.data_dir))
    if config.views != IDENTITY:
        changes["views"] = ",".join(parse_views(config.views))  # "identity, flip" -> "identity,flip"
    return dataclasses.replace(config, **changes)


def _validate(config: TrainConfig) -> None:
    problems = []
    if config.img_size < 32:
        problems.append("--img-size must be at least 32 (MobileNetV2's minimum)")
    if config.batch_size < 1:
        problems.append("--batch-size must be positive")
    if config.epochs < 0 or config.fine_tune_epochs < 0:
        problems.append("epochs cannot be negative")
    if config.fine_tune_at < 0:
        problems.append("--fine-tune-at cannot be negative")
    if config.shuffle_buffer < 1:
        problems.append("--shuffle-buffer must be at least 1 (1 = no shuffling)")
    if config.keep < 0 or config.version < 0:
        problems.append("--keep and --version cannot be negative (0 = keep all, next version)")
    if config.tta not in TTA_CHOICES:
        problems.append(f"--tta must be one of {', '.join(TTA_CHOICES)}, not {config.tta!r}")
    if config.lr_schedule not in LR_SCHEDULES:
        problems.append(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, not {config.lr_schedule!r}")
    for name in ("dropout", "label_smoothing"):
        if not 0 <= getattr(config, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be in [0, 1)")
    if config.weight_decay < 0 or config.early_stopping_patience < 0:
        problems.append("--weight-decay and --early-stopping-patience cannot be negative")
    try:
        views = parse_views(config.views)
    except ValueError as err:
        problems.append(str(err))
    else:
        if config.augment and not is_plain_views(views):
            problems.append("--views and --augment cannot be combined (--augment draws its own random views)")
    if problems:
        raise ConfigError("; ".join(problems))


def parse_views(spec: str) -> tuple[str, ...]:
    """'identity,flip' -> ('identity', 'flip'); raises ValueError naming an unknown or repeated view."""
    names = tuple(name.strip() for name in spec.split(",") if name.strip())
    unknown = [name for name in names if name not in VIEW_NAMES]
    if not names or unknown:
        raise ValueError(f"--views takes a comma-separated list of {', '.join(VIEW_NAMES)}; "
                         f"got {spec!r}" + (f" ({', '.join(unknown)} unknown)" if unknown else ""))
    if len(set(names)) != len(names):
        raise ValueError(f"--views lists a view twice: {spec!r}")
    return names


def is_plain_views(names: Sequence[str]) -> bool:
    """Only the identity: the tutorial's pipeline, nothing drawn."""
    return tuple(names) == (IDENTITY,)


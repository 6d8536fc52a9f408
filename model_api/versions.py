"""The model directory layout TF Serving polls: `<base>/<model_name>/<integer version>/`.

TF Serving treats a child directory as a version only when its whole name parses as an
int64 (file_system_storage_path_source.cc), and ignores everything else. Staging
directories therefore never have an integer name.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

_VERSION_NAME = re.compile(r"^[0-9]{1,18}$")
STAGING_PREFIX = ".staging-"


def is_version_name(name: str) -> bool:
    return bool(_VERSION_NAME.match(name))


def list_versions(model_dir: str | os.PathLike) -> list[int]:
    """Integer versions present under `model_dir`, ascending; [] if it does not exist."""
    path = Path(model_dir)
    if not path.is_dir():
        return []
    return sorted(int(p.name) for p in path.iterdir() if p.is_dir() and is_version_name(p.name))


def next_version(model_dir: str | os.PathLike) -> int:
    """The next integer after the highest present version (1 for an empty model directory)."""
    versions = list_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def version_dir(base_path: str | os.PathLike, model_name: str, version: int) -> Path:
    return Path(base_path) / model_name / str(int(version))

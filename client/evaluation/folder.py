"""A labelled image folder in the training job's layout (model_api/image_folder.py).

A file that is not an image is not skipped here but sent, so the server's own refusal
names the problem (the evaluation counts it apart).
"""
from __future__ import annotations

from dataclasses import dataclass

from model_api.image_folder import FolderError, read_image_folder
from model_api.versions import is_url


class EvaluationError(RuntimeError):
    """The evaluation cannot start or cannot be trusted; the message says why in one line."""


@dataclass
class LabelledFolder:
    root: str
    classes: list[str]            # folder classes, sorted
    files: list[tuple[str, str]]  # (path, class name), sorted by class then path

    def count(self, name: str) -> int:
        return sum(1 for _, c in self.files if c == name)


def read_labelled_folder(root: str) -> LabelledFolder:
    if is_url(root):  # the client reads each image with open(): a mounted folder only
        raise EvaluationError(f"the evaluation reads a local folder, not a URL: {root}")
    try:
        classes, files = read_image_folder(root)
    except FolderError as err:
        raise EvaluationError(str(err)) from None
    return LabelledFolder(root, classes, [(path, classes[label]) for path, label in files])

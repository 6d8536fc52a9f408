"""A labelled image folder in the training job's layout: DIR/<class name>/<files>.

The same rules as the training job's folder reader (training/data.py, list_image_folder),
restated here because the client must not import the training code: classes are the
sorted non-hidden sub-folders, every non-hidden file below a class folder (recursively) is
one of its images, and a file that is not an image is not skipped here but sent, so the
server's own refusal names the problem (the evaluation counts it apart).
"""
from __future__ import annotations

import os
from dataclasses import dataclass


class EvaluationError(RuntimeError):
    """The evaluation cannot start or cannot be trusted; the message says why in one line."""


@dataclass
class LabelledFolder:
    root: str
    classes: list[str]            # folder classes, sorted
    files: list[tuple[str, str]]  # (path, class name), sorted by class then path

    def count(self, name: str) -> int:
        return sum(1 for _, c in self.files if c == name)


def _files_below(directory: str) -> list[str]:
    found = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, n) for n in sorted(names) if not n.startswith("."))
    return found


def read_labelled_folder(root: str) -> LabelledFolder:
    if not os.path.isdir(root):
        raise EvaluationError(f"not a directory: {root}")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if len(classes) < 2:
        raise EvaluationError(f"{root} needs one sub-folder of images per class and at least 2 classes; "
                              f"found {len(classes)} ({', '.join(classes) or 'none'})")
    files = [(path, name) for name in classes for path in _files_below(os.path.join(root, name))]
    empty = [name for name in classes if not any(c == name for _, c in files)]
    if empty:
        raise EvaluationError(f"class folder(s) with no files in {root}: {', '.join(empty)}")
    return LabelledFolder(root, classes, files)

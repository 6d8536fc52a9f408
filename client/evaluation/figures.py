"""The evaluation's PNGs, drawn with matplotlib's object API on the Agg canvas (no pyplot,
no global backend, safe beside other threads)."""
from __future__ import annotations

import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

GRID_COLUMNS = 4


def _save(figure: Figure, path: str) -> str:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def confusion_png(confusion: dict, path: str, title: str) -> str:
    """confusion: report.json's confusion_matrix (classes, counts: rows true, columns answer)."""
    classes, counts = confusion["classes"], confusion["counts"]
    size = max(4.0, 0.9 * len(classes) + 2)
    figure = Figure(figsize=(size, size))
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    highest = max((n for row in counts for n in row), default=0)
    for i, row in enumerate(counts):
        for j, n in enumerate(row):
            axes.text(j, i, str(n), ha="center", va="center", color="white" if n > highest / 2 else "black")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("answer")
    axes.set_ylabel("true class")
    axes.set_title(f"{title}\nconfusion matrix")
    return _save(figure, path)


def reliability_png(calibration: dict, path: str, title: str) -> str:
    """Accuracy against mean confidence per bin (the diagonal is perfect calibration), with
    each bin's share of the answers below."""
    bins = calibration["bins"]
    width = bins[0]["upper"] - bins[0]["lower"]
    lefts = [b["lower"] for b in bins]
    figure = Figure(figsize=(5.5, 6.5))
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.bar(lefts, [b["accuracy"] or 0 for b in bins], width=width, align="edge", edgecolor="black",
            color="tab:blue", label="accuracy")
    confident = [b for b in bins if b["count"]]
    top.scatter([b["confidence"] for b in confident], [b["accuracy"] for b in confident], color="tab:red",
                zorder=3, label="(mean confidence, accuracy)")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    ece = calibration["ece"]
    top.set_title(f"{title}\nreliability, ECE {ece:.4f}" if ece is not None else f"{title}\nreliability")
    top.legend(loc="upper left")
    total = sum(b["count"] for b in bins) or 1
    bottom.bar(lefts, [b["count"] / total for b in bins], width=width, align="edge", edgecolor="black",
               color="grey")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (probability of the answer)")
    bottom.set_ylabel("share")
    return _save(figure, path)


def _thumbnail(source: str):
    """The image as the user sees it, or None if PIL cannot read it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            image = image.convert("RGB")
            image.thumbnail((256, 256))
            return image
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def image_grid_png(items: list[tuple[str, str]], path: str, title: str) -> str:
    """A grid of (image file, caption); an empty list gives a figure that says so."""
    columns = min(GRID_COLUMNS, max(1, len(items)))
    rows = max(1, math.ceil(len(items) / columns))
    figure = Figure(figsize=(3 * columns, 3.3 * rows + 0.4))
    figure.suptitle(title)
    if not items:
        axes = figure.add_subplot()
        axes.text(0.5, 0.5, "none", ha="center", va="center", fontsize=14)
        axes.axis("off")
    for k, (source, caption) in enumerate(items):
        axes = figure.add_subplot(rows, columns, k + 1)
        image = _thumbnail(source)
        if image is None:
            axes.text(0.5, 0.5, "cannot display", ha="center", va="center")
        else:
            axes.imshow(image)
        axes.set_title(caption, fontsize=9)
        axes.axis("off")
    return _save(figure, path)

"""TensorFlow's error text as a caller should see it."""
from __future__ import annotations

_NOISE = ("Graph execution error", "Detected at node", "<stack traces unavailable>")


def clean_tf_message(message: str) -> str:
    """TF's error text minus the Python-side preamble and the failing node's name.

    TF's messages end with the graph node that failed ("\\n\\t [[{{node ...}}]]"); what
    matters is the first part, which says what was wrong with the input.
    """
    message = message.split("\n\t [[")[0]
    lines = [line.strip() for line in message.splitlines() if line.strip() and not line.startswith(_NOISE)]
    return " ".join(lines).strip() or message.strip()

"""Where an evaluation's files go and what every report.json says about its context."""
from __future__ import annotations

import datetime
import json
import os
import re
import socket
from dataclasses import dataclass

from client.evaluation.folder import EvaluationError

REPORT_FILE = "report.json"
PREDICTIONS_FILE = "predictions.jsonl"


@dataclass
class Target:
    """What the user asked for: a server, a model, and a version, a label or neither (latest)."""
    transport: str          # "grpc" or "rest"
    address: str            # HOST:PORT or the REST base URL
    model: str
    version: int | None = None
    label: str | None = None

    def describe(self, served_version: int | None) -> str:
        """E.g. "label stable (version 1)", "version 2", "latest (version 3)"."""
        asked = f"label {self.label}" if self.label else "latest" if self.version is None else ""
        served = f"version {served_version if served_version is not None else '?'}"
        return f"{asked} ({served})" if asked else served

    def slug(self, served_version: int | None) -> str:
        parts = [self.label] if self.label else []
        parts.append(f"v{served_version}" if served_version is not None else "latest")
        return "-".join(parts)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def client_info() -> dict:
    try:
        from importlib.metadata import version

        package = version("transfer-serve")
    except Exception:  # noqa: BLE001 - running from a checkout that was never installed
        package = None
    return {"host": socket.gethostname(), "package": "transfer-serve", "version": package}


def context(command: str, target: Target, started: datetime.datetime) -> dict:
    return {"command": command, "date": started.isoformat(timespec="seconds"),
            "server": {"transport": target.transport, "address": target.address}, "client": client_info()}


def default_output_dir(kind: str, model: str, slugs: list[str], started: datetime.datetime) -> str:
    name = "-".join([kind, model, *slugs, started.strftime("%Y%m%dT%H%M%SZ")])
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def prepare_output_dir(path: str) -> str:
    """Create it; never overwrite an earlier evaluation's report."""
    if os.path.exists(os.path.join(path, REPORT_FILE)):
        raise EvaluationError(f"{path} already holds a {REPORT_FILE}: choose another --output")
    os.makedirs(path, exist_ok=True)
    return path


def write_json(path: str, document: dict) -> None:
    with open(path, "w") as f:
        json.dump(document, f, indent=2)
        f.write("\n")


def write_jsonl(path: str, rows) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")

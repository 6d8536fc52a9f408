"""Dockerfile instructions read from the file itself, so tests run what the image runs
(the HEALTHCHECK command, a RUN step) instead of restating it."""
from __future__ import annotations

import json
import pathlib
import re
import socket
from contextlib import contextmanager

import pytest

from tests.conftest import REPO, start_local_server

SERVE_DOCKERFILE = REPO / "Dockerfile.serve"


def instructions(dockerfile: pathlib.Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    joined, current = [], ""
    for line in dockerfile.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in joined]


def arg_default(name: str, dockerfile: pathlib.Path = SERVE_DOCKERFILE) -> str:
    (default,) = [args.split("=", 1)[1] for keyword, args in instructions(dockerfile)
                  if keyword == "ARG" and args.startswith(f"{name}=")]
    return default


def healthcheck_argv(dockerfile: pathlib.Path = SERVE_DOCKERFILE) -> list[str]:
    """The HEALTHCHECK's CMD, which must be in exec form (a JSON array: no /bin/sh)."""
    (args,) = [args for keyword, args in instructions(dockerfile) if keyword == "HEALTHCHECK"]
    _, _, command = args.partition(" CMD ")
    assert command.startswith("["), f"HEALTHCHECK CMD in shell form runs under the image's /bin/sh: {command}"
    return json.loads(command)


def healthcheck_port(argv: list[str]) -> int:
    """The loopback port the healthcheck connects to (the image's REST port)."""
    (port,) = re.findall(r"/dev/tcp/127\.0\.0\.1/(\d+)", " ".join(argv))
    return int(port)


def run_step(marker: str, dockerfile: pathlib.Path = SERVE_DOCKERFILE) -> str:
    """The one RUN instruction whose script mentions `marker`."""
    (script,) = [args for keyword, args in instructions(dockerfile) if keyword == "RUN" and marker in args]
    return script


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # As the servers bind: a closed connection's TIME_WAIT does not hold the port, a listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextmanager
def local_server_on_port(model_base: pathlib.Path, rest_port: int, name: str = "pets"):
    """The project's local server (TF Serving's REST API) on `rest_port`, serving `name`."""
    if not port_is_free(rest_port):
        pytest.skip(f"port {rest_port}, the one the healthcheck asks, is in use on this machine")
    server = start_local_server(model_base, name, rest_port_override=rest_port)
    try:
        yield server
    finally:
        server.stop()

"""`predict evaluate` on the command line: exit codes and one-line errors through a fake transport, then
once end to end against the local server (gRPC and REST)."""
from __future__ import annotations

import json
import random

import pytest

import client.__main__ as cli
from client import ModelClient, cli_args
from tests.client.test_evaluate import SMALL, FakeTransport, make_folder
from tests.conftest import encode, synthetic_photo

# --- the command line ----------------------------------------------------------------------

@pytest.fixture
def fake_server(monkeypatch):
    """Every ModelClient the CLI makes talks to a FakeTransport (one per version or label)."""
    transports = {}

    def make(args, batch_size=16, concurrency=1):
        key = args.label or args.version
        transports.setdefault(key, FakeTransport())
        return ModelClient(transports[key], batch_size, concurrency)

    monkeypatch.setattr(cli_args, "connect", make)
    return transports


@pytest.mark.parametrize("minimum, code", [(0.8, 0), (0.81, 1)])
def test_min_accuracy_sets_the_exit_status_and_prints_both_figures(tmp_path, capsys, fake_server, minimum, code):
    folder = make_folder(tmp_path / "photos", SMALL)
    out = tmp_path / "out"
    argv = ["evaluate", str(folder), "--grpc", "fake:1", "--model", "pets", "--output", str(out),
            "--min-accuracy", str(minimum)]
    assert cli.main(argv) == code
    stdout, stderr = capsys.readouterr()
    assert "accuracy 0.8000 (4 of 5)" in stdout and "refused: " in stdout
    assert ("accuracy 0.8000 is below --min-accuracy 0.81" in stderr) == bool(code)
    assert json.loads((out / "report.json").read_text())["min_accuracy"] == {"required": minimum,
                                                                          "passed": not code}


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, fake_server):
    folder = make_folder(tmp_path / "photos", {"cat": [b"0:0.9"] * 4, "cow": [b"1:0.9"] * 4})
    assert cli.main(["evaluate", str(folder), "--grpc", "fake:1", "--model", "pets"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: folder class(es) cow not among") and "\n" not in err
    assert cli.main(["evaluate", str(tmp_path / "missing"), "--rest", "http://fake", "--model", "pets"]) == 2
    assert capsys.readouterr().err.strip() == f"error: not a directory: {tmp_path / 'missing'}"


def test_an_answer_in_an_unexpected_form_is_one_line_and_exit_2_not_the_gate_status(tmp_path, capsys, fake_server):
    class NoLabels(FakeTransport):
        def predict(self, images):
            version, outputs = super().predict(images)
            del outputs["labels"]
            return version, outputs

    fake_server[None] = NoLabels()
    folder = make_folder(tmp_path / "photos", SMALL)
    argv = ["evaluate", str(folder), "--grpc", "fake:1", "--model", "pets", "--output", str(tmp_path / "out"),
            "--min-accuracy", "0.5"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == "error: missing 'labels' (an answer in an unexpected form?)\n"


def test_an_evaluation_where_no_image_was_answered_exits_2_in_one_line(tmp_path, capsys, fake_server):
    folder = make_folder(tmp_path / "photos", {"cat": [b"junk"] * 3, "dog": [b"junk"] * 2})
    out = tmp_path / "out"
    assert cli.main(["evaluate", str(folder), "--grpc", "fake:1", "--model", "pets", "--output", str(out)]) == 2
    stdout, stderr = capsys.readouterr()
    assert stderr.startswith("error: no image was answered: the server refused all 5 (5 with: INVALID_ARGUMENT: ")
    assert stderr.count("\n") == 1 and "not a JPEG" in stderr
    assert not (out / "report.json").exists()


def test_default_output_folder_is_named_for_the_model_version_and_time(tmp_path, monkeypatch, fake_server):
    monkeypatch.chdir(tmp_path)
    folder = make_folder(tmp_path / "photos", SMALL)
    assert cli.main(["evaluate", str(folder), "--grpc", "fake:1", "--model", "pets", "--label", "stable"]) == 0
    made = [p.name for p in tmp_path.iterdir() if p.name.startswith("evaluation-")]
    assert len(made) == 1 and made[0].startswith("evaluation-pets-stable-v3-")
    assert (tmp_path / made[0] / "report.json").exists()


# --- end to end ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_server(model_base):
    from tests.conftest import start_local_server

    server = start_local_server(model_base)
    yield server
    server.stop()


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_evaluate_through_the_local_server(local_server, tmp_path, transport):
    rng = random.Random(7)
    folder = tmp_path / "photos"
    for label, name in enumerate(("cat", "dog")):
        (folder / name).mkdir(parents=True)
        for i in range(6):
            (folder / name / f"{i}.jpg").write_bytes(encode(synthetic_photo(label, rng, size=(40, 40))))
    (folder / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    address = (["--grpc", f"127.0.0.1:{local_server.grpc_port}"] if transport == "grpc"
               else ["--rest", f"http://127.0.0.1:{local_server.rest_port}"])
    out = tmp_path / "out"
    assert cli.main(["evaluate", str(folder), *address, "--model", "pets", "--batch-size", "4",
                     "--output", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["images"], report["answered"], report["refused"]["count"]) == (13, 12, 1)
    assert report["refused"]["images"][0]["source"].endswith("broken.jpg")
    assert report["model"]["version"] == 1 and report["model"]["num_classes"] == 2
    assert report["model"]["signature"]["inputs"] == {"image_bytes": {"dtype": "DT_STRING", "shape": [-1]}}
    assert sum(sum(row) for row in report["confusion_matrix"]["counts"]) == 12
    assert report["server"] == {"transport": transport, "address": address[1]}

"""`predict compare`: paired figures, McNemar's verdict and --require-not-worse's exit status."""
from __future__ import annotations

import json

import pytest

import client.__main__ as cli
from client import ModelClient, cli_args
from client.evaluation import compare
from client.evaluation.folder import read_labelled_folder
from client.evaluation.outputs import Target
from tests.client.test_evaluate import FakeTransport

# 15 cats and 15 dogs. The baseline answers all 30 right; the candidate gets 10 dogs wrong.
BASELINE = {"cat": [b"0:0.9"] * 15, "dog": [b"1:0.9"] * 15}
CANDIDATE = {"cat": [b"0:0.9"] * 15, "dog": [b"0:0.7"] * 10 + [b"1:0.8"] * 5}


class ScriptedTransport(FakeTransport):
    """Answers from a script keyed by each file's bytes (a unique name such as b"dog3", see
    fabricated()) instead of reading the answer from them, so two versions can answer the
    same images differently."""

    def __init__(self, answers: dict[bytes, bytes], **kwargs):
        super().__init__(**kwargs)
        self.answers = answers

    def predict(self, images):
        return super().predict([self.answers.get(i, i) for i in images])


def fabricated(tmp_path, candidate_refuses=0):
    """Images whose bytes name them; the baseline is always right, the candidate as above."""
    folder = tmp_path / "photos"
    names = {}
    for cls, payloads in BASELINE.items():
        (folder / cls).mkdir(parents=True)
        for i, _ in enumerate(payloads):
            data = f"{cls}{i}".encode()
            (folder / cls / f"{i:03d}.jpg").write_bytes(data)
            names[data] = (cls, i)
    base = {d: BASELINE[c][i] for d, (c, i) in names.items()}
    cand = {d: CANDIDATE[c][i] for d, (c, i) in names.items()}
    for d in list(cand)[:candidate_refuses]:
        cand[d] = b"junk"
    return folder, ScriptedTransport(base, version=1), ScriptedTransport(cand, version=2)


def run(folder, baseline, candidate):
    with ModelClient(baseline, 4, 2) as a, ModelClient(candidate, 4, 2) as b:
        return compare.compare(a, b, read_labelled_folder(str(folder)), Target("grpc", "fake:1", "pets", label="stable"),
                               Target("grpc", "fake:1", "pets", label="canary"))


def test_report_pairs_the_answers_and_tests_the_disagreements(tmp_path):
    comparison = run(*fabricated(tmp_path))
    report = compare.report(comparison)
    assert report["both_answered"] == 30
    assert report["baseline"]["accuracy"]["value"] == 1.0 and report["candidate"]["accuracy"]["value"] == 20 / 30
    assert (report["baseline"]["version"], report["candidate"]["version"]) == (1, 2)
    assert report["agreement"] == {"agreed": 20, "total": 30, "rate": pytest.approx(2 / 3)}
    assert report["mcnemar"] == {"only_baseline_right": 10, "only_candidate_right": 0, "both_right": 20,
                                 "both_wrong": 0}
    assert report["verdict"]["p_value"] == pytest.approx(2 / 2 ** 10)
    assert report["verdict"]["candidate_worse"] and not report["verdict"]["candidate_better"]
    assert len(report["disagreements"]) == 10
    assert {d["candidate"] for d in report["disagreements"]} == {"cat"}


def test_swapped_sides_make_the_candidate_significantly_better(tmp_path):
    folder, good, bad = fabricated(tmp_path)
    verdict = compare.report(run(folder, bad, good))["verdict"]
    assert verdict["candidate_better"] and not verdict["candidate_worse"]


def test_a_few_disagreements_are_not_significant():
    verdict = compare.verdict(only_baseline_right=3, only_candidate_right=1, refused_only_by_candidate=0)
    assert verdict["p_value"] == pytest.approx(2 * (1 + 4) / 16)
    assert not verdict["candidate_worse"] and verdict["text"].startswith("no significant difference")


def test_a_candidate_that_refuses_images_the_baseline_answers_is_worse(tmp_path):
    folder, baseline, candidate = fabricated(tmp_path, candidate_refuses=1)
    report = compare.report(run(folder, baseline, candidate))
    assert len(report["refused_only_by"]["candidate"]) == 1 and report["candidate"]["refused"] == 1
    assert report["both_answered"] == 29
    assert report["verdict"]["candidate_worse"]
    assert report["verdict"]["text"] == "candidate refuses 1 image(s) the baseline answers"


def test_a_candidate_that_refuses_every_image_is_worse_not_an_error(tmp_path):
    # evaluate's "nothing answered" is exit 2; compare keeps its own verdict for the candidate.
    folder, baseline, candidate = fabricated(tmp_path, candidate_refuses=30)
    report = compare.report(run(folder, baseline, candidate))
    assert report["both_answered"] == 0 and report["verdict"]["candidate_worse"]


@pytest.fixture
def scripted_server(tmp_path, monkeypatch):
    folder, baseline, candidate = fabricated(tmp_path)
    transports = {"stable": baseline, "canary": candidate}
    monkeypatch.setattr(cli_args, "connect", lambda args, batch_size=16, concurrency=1:
                        ModelClient(transports[args.label], batch_size, concurrency))
    return folder


@pytest.mark.parametrize("flags, code", [([], 0), (["--require-not-worse"], 1)])
def test_require_not_worse_exits_1_for_a_worse_candidate(scripted_server, tmp_path, capsys, flags, code):
    out = tmp_path / "out"
    argv = ["compare", str(scripted_server), "--grpc", "fake:1", "--model", "pets", "--label", "stable",
            "--against", "canary", "--output", str(out), *flags]
    assert cli.main(argv) == code
    stdout, stderr = capsys.readouterr()
    assert "candidate significantly worse (p = 0.001953 < 0.05)" in stdout
    assert "agreement                        0.6667 (20 of 30)" in stdout
    assert ("the candidate is worse" in stderr) == bool(code)
    assert (out / "disagreements.png").read_bytes()[:4] == b"\x89PNG"
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and {"baseline", "candidate", "true"} <= set(rows[0])


def test_require_not_worse_passes_the_same_version_against_itself(scripted_server, tmp_path, capsys):
    argv = ["compare", str(scripted_server), "--grpc", "fake:1", "--model", "pets", "--label", "stable",
            "--against", "stable", "--output", str(tmp_path / "out"), "--require-not-worse"]
    assert cli.main(argv) == 0
    assert "no significant difference (p = 1 >= 0.05)" in capsys.readouterr().out

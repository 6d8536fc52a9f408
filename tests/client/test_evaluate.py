"""`predict evaluate`'s library: figures, refused images and the model's classes, through a fake transport
(fast, exact answers). The command line and its exit codes: test_evaluate_cli.py."""
from __future__ import annotations

import json

import numpy as np
import pytest

from client import ModelClient
from client.evaluation import evaluate
from client.evaluation.classes import ModelClasses
from client.evaluation.folder import EvaluationError, read_labelled_folder
from client.evaluation.metrics import wilson_interval
from client.evaluation.outputs import Target
from client.results import Prediction, ServerError

# The local server's message for a file that is not an image (the exported signature's check).
NOT_AN_IMAGE = ("assertion failed: [image is not a JPEG, PNG, GIF or BMP file (unknown or corrupt header); "
                "its first bytes:] [junk]")


def metadata(name="pets", version=3, num_classes=2) -> dict:
    tensor = lambda dtype, *dims: {"dtype": dtype, "tensor_shape": {"dim": [{"size": str(d)} for d in dims]}}
    return {"model_spec": {"name": name, "version": str(version), "signature_name": ""},
            "metadata": {"signature_def": {"signature_def": {"serving_default": {
                "inputs": {"image_bytes": tensor("DT_STRING", -1)},
                "outputs": {"probabilities": tensor("DT_FLOAT", -1, num_classes), "classes": tensor("DT_INT64", -1),
                            "labels": tensor("DT_STRING", -1), "logits": tensor("DT_FLOAT", -1, num_classes)},
                "method_name": "tensorflow/serving/predict"}}}}}


class FakeTransport:
    """Answers what each "image" says: b"<class index>:<probability of it>"; b"junk" is refused
    as the server refuses a file that is not an image."""

    name = "fake"

    def __init__(self, labels=("cat", "dog"), version=3, meta=None):
        self.labels, self.version = list(labels), version
        self.meta = meta or metadata(version=version, num_classes=len(labels))
        self.predict_calls, self.metadata_calls = 0, 0

    def predict(self, images: list[bytes]):
        self.predict_calls += 1
        if any(not i[:1].isdigit() for i in images):
            raise ServerError("INVALID_ARGUMENT", NOT_AN_IMAGE, 400)
        classes = [int(i.split(b":")[0]) for i in images]
        rows = []
        for image, k in zip(images, classes):
            p = float(image.split(b":")[1])
            row = [(1 - p) / (len(self.labels) - 1)] * len(self.labels)
            row[k] = p
            rows.append(row)
        return self.version, {"probabilities": np.array(rows), "classes": np.array(classes),
                              "labels": [self.labels[k] for k in classes]}

    def request_bytes(self, sizes):
        return sum(sizes)

    def metadata(self):
        self.metadata_calls += 1
        return self.meta

    def status(self):
        return []

    def close(self):
        pass


def make_folder(root, files: dict[str, list[bytes]]):
    for name, payloads in files.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, payload in enumerate(payloads):
            (root / name / f"{i:03d}.jpg").write_bytes(payload)
    return root


# cat: 2 right (0.9, 0.6), 1 wrong (answered dog at 0.8); dog: 2 right (0.7, 1.0) and a file that is not an image.
SMALL = {"cat": [b"0:0.9", b"0:0.6", b"1:0.8"], "dog": [b"1:0.7", b"junk", b"1:1.0"]}


def run(transport, folder, batch_size=1, concurrency=1, **target):
    with ModelClient(transport, batch_size, concurrency) as client:
        return evaluate.evaluate(client, read_labelled_folder(str(folder)), Target("grpc", "fake:1", "pets", **target))


def test_report_has_the_hand_computed_figures_and_counts_refused_images_apart(tmp_path):
    evaluation = run(FakeTransport(), make_folder(tmp_path / "photos", SMALL))
    report = evaluate.report(evaluation)
    assert (report["images"], report["answered"], report["refused"]["count"]) == (6, 5, 1)
    refused = report["refused"]["images"][0]
    assert refused["source"].endswith("dog/001.jpg") and refused["true"] == "dog"
    assert "not a JPEG" in refused["error"]
    accuracy = report["accuracy"]
    assert (accuracy["correct"], accuracy["total"], accuracy["value"]) == (4, 5, 0.8)  # the refused one is not wrong
    assert accuracy["interval_95"] == pytest.approx(wilson_interval(4, 5))
    assert report["confusion_matrix"]["classes"] == ["cat", "dog"]
    assert report["confusion_matrix"]["counts"] == [[2, 1], [0, 2]]
    assert report["per_class"]["cat"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8),
                                          "support": 3, "predicted": 2}
    assert report["per_class"]["dog"]["precision"] == pytest.approx(2 / 3)
    # bins: 0.6 right, 0.7 right, 0.8 wrong, 0.9 right, 1.0 right
    assert report["calibration"]["ece"] == pytest.approx((0.4 + 0.3 + 0.8 + 0.1 + 0.0) / 5)
    assert report["model"]["version"] == 3 and report["model"]["classes"] == ["cat", "dog"]
    assert report["versions_answered"] == {"3": 5}
    assert report["data"]["images_per_class"] == {"cat": 3, "dog": 3}
    assert [r.source[-11:] for r in evaluation.mistakes()] == ["cat/002.jpg"]


def test_outputs_are_written_and_an_earlier_report_is_never_overwritten(tmp_path):
    evaluation = run(FakeTransport(), make_folder(tmp_path / "photos", SMALL))
    report = evaluate.report(evaluation)
    out = tmp_path / "out"
    files = evaluate.write(evaluation, report, str(out))
    assert sorted(files) == sorted(["report.json", "confusion.png", "reliability.png", "mistakes.png",
                                    "predictions.jsonl"])
    for png in ("confusion.png", "reliability.png", "mistakes.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "report.json").read_text())["accuracy"]["value"] == 0.8
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, True, False, True, None, True]
    assert rows[4]["error"].startswith("INVALID_ARGUMENT")
    with pytest.raises(EvaluationError, match="already holds a report.json"):
        evaluate.write(evaluation, report, str(out))


def test_sending_the_folder_in_small_chunks_gives_the_same_results_as_one_call(tmp_path, monkeypatch):
    from client.evaluation.labelled import classify_folder

    folder = read_labelled_folder(str(make_folder(tmp_path / "photos", {
        "cat": [b"0:0.9", b"junk", b"1:0.8", b"0:0.6", b"0:0.7", b"1:0.55", b"0:0.95"],
        "dog": [b"1:0.7", b"1:1.0", b"0:0.65", b"junk", b"1:0.9"]})))
    calls = []
    real = ModelClient.predict_files
    monkeypatch.setattr(ModelClient, "predict_files",
                        lambda self, paths, on_done=None: calls.append(len(paths)) or real(self, paths, on_done))

    def answers(chunk_size):
        calls.clear()
        with ModelClient(FakeTransport(), batch_size=2, concurrency=1) as client:
            found = classify_folder(client, folder, ModelClasses(2), chunk_size=chunk_size)
        return [r.to_dict() for r in found.results], found.classes.labels, found.unconfirmed, list(calls)

    *whole, whole_calls = answers(len(folder.files))
    *chunked, chunked_calls = answers(3)
    assert chunked == whole
    assert whole_calls == [2, 10] and chunked_calls == [2, 3, 3, 3, 1]  # the first round, then the chunks
    assert [r["source"] for r in whole[0]] == [path for path, _ in folder.files]  # the folder's order


def test_a_folder_class_the_model_does_not_know_stops_the_run_after_the_first_round(tmp_path):
    folder = make_folder(tmp_path / "photos", {"cat": [b"0:0.9"] * 40, "cow": [b"1:0.9"] * 40})
    transport = FakeTransport()
    with pytest.raises(EvaluationError, match="cow.*not among the model's classes \\(cat, dog\\)"):
        run(transport, folder, batch_size=4, concurrency=2)
    assert transport.predict_calls == 2  # one round of concurrent batches (8 of 80 images), then it stopped


def test_more_folder_classes_than_the_model_outputs_is_an_error_before_any_prediction(tmp_path):
    folder = make_folder(tmp_path / "photos", {"cat": [b"0:0.9"], "dog": [b"1:0.9"], "emu": [b"1:0.9"]})
    transport = FakeTransport()
    with pytest.raises(EvaluationError, match="3 classes .* the model outputs 2"):
        run(transport, folder)
    assert transport.predict_calls == 0


def test_a_class_the_model_never_answers_stays_unconfirmed_and_counts_as_wrong(tmp_path):
    folder = make_folder(tmp_path / "photos", {"cat": [b"0:0.9"] * 3, "dog": [b"0:0.6"] * 2})
    report = evaluate.report(run(FakeTransport(), folder))
    assert report["data"]["unconfirmed_classes"] == ["dog"]
    assert report["accuracy"]["value"] == 0.6 and report["per_class"]["dog"]["recall"] == 0.0
    assert report["confusion_matrix"]["classes"] == ["cat", "dog"]


def test_labels_that_change_during_the_run_are_an_error():
    classes = ModelClasses(2)
    classes.learn([Prediction("a", "cat", 0, [0.9, 0.1])])
    with pytest.raises(EvaluationError, match="class 0 both as 'cat' and as 'kitten'"):
        classes.learn([Prediction("b", "kitten", 0, [0.9, 0.1])])


@pytest.mark.parametrize("layout, message", [({}, "at least 2 classes; found 0"),
                                             ({"cat": [b"0:0.9"]}, "at least 2 classes; found 1 \\(cat\\)"),
                                             ({"cat": [b"0:0.9"], "dog": []}, "no files in .*: dog")])
def test_an_empty_or_one_class_folder_is_a_clear_error(tmp_path, layout, message):
    root = tmp_path / "photos"
    root.mkdir()
    make_folder(root, layout)
    with pytest.raises(EvaluationError, match=message):
        read_labelled_folder(str(root))


def test_a_url_is_refused_since_the_client_reads_images_from_local_files():
    with pytest.raises(EvaluationError, match="local folder, not a URL: gs://bucket/photos"):
        read_labelled_folder("gs://bucket/photos")


def test_answers_from_another_version_than_the_one_reported_are_flagged(tmp_path):
    transport = FakeTransport(version=4, meta=metadata(version=3))  # e.g. a label moved during the run
    report = evaluate.report(run(transport, make_folder(tmp_path / "photos", SMALL)))
    assert report["model"]["version"] == 3 and report["versions_answered"] == {"4": 5}
    assert any(line.startswith("warning: the server reported version 3 but answers came from versions 4 (5)")
               for line in evaluate.summary(report, "pets"))


def test_many_refused_files_never_stop_the_run_and_the_terminal_shows_the_first_twenty(tmp_path):
    folder = make_folder(tmp_path / "photos", {"cat": [b"0:0.9"] + [b"junk"] * 25, "dog": [b"1:0.9"]})
    report = evaluate.report(run(FakeTransport(), folder, batch_size=8))
    assert (report["answered"], report["refused"]["count"], report["accuracy"]["value"]) == (2, 25, 1.0)
    lines = evaluate.summary(report, "pets")
    assert sum(line.startswith("refused: ") for line in lines) == 21
    assert lines[-1] == "refused: 5 more, listed in report.json"


def test_more_unknown_folder_classes_than_unanswered_indices_is_an_error_at_the_end(tmp_path):
    folder = make_folder(tmp_path / "photos", {"cat": [b"0:0.9"] * 2, "cow": [b"1:0.9"] * 2, "yak": [b"1:0.8"]})
    with pytest.raises(EvaluationError, match="cow, yak not among the model's classes "
                                              "\\(answers named only cat, dog; 1 of 3 never answered\\)"):
        run(FakeTransport(labels=("cat", "dog", "emu")), folder)

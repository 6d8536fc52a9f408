"""One folder rule (model_api/image_folder.py) for `predict DIR`, `predict evaluate DIR` and the
training job: sorted, hidden names skipped, symlinked folders followed, each real folder once."""
import json
import os
import random

import pytest

import client.__main__ as cli
from client import expand_paths
from model_api.image_folder import read_image_folder, walk_files
from tests.conftest import encode, start_local_server, synthetic_photo


def photos_with_a_linked_class(tmp_path):
    """photos/cat -> elsewhere/cats (a symlink), photos/dog a folder; 3 photos each, and a hidden file."""
    rng = random.Random(11)
    cats, folder = tmp_path / "elsewhere" / "cats", tmp_path / "photos"
    cats.mkdir(parents=True)
    (folder / "dog").mkdir(parents=True)
    for i in range(3):
        (cats / f"c{i}.jpg").write_bytes(encode(synthetic_photo(0, rng, size=(40, 40))))
        (folder / "dog" / f"d{i}.jpg").write_bytes(encode(synthetic_photo(1, rng, size=(40, 40))))
    (cats / ".DS_Store").write_bytes(b"not a photo")
    (folder / "cat").symlink_to(cats, target_is_directory=True)
    return folder


def test_predict_dir_lists_the_photos_of_a_symlinked_folder(tmp_path):
    folder = photos_with_a_linked_class(tmp_path)
    expected = [str(folder / "cat" / f"c{i}.jpg") for i in range(3)] + [str(folder / "dog" / f"d{i}.jpg")
                                                                          for i in range(3)]
    assert expand_paths([str(folder)]) == expected


def test_a_symlinked_folder_inside_a_class_is_followed_and_a_loop_is_walked_once(tmp_path):
    folder = photos_with_a_linked_class(tmp_path)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "x.jpg").write_bytes(b"x")
    (folder / "dog" / "more").symlink_to(extra, target_is_directory=True)
    (folder / "dog" / "again").symlink_to(folder / "dog", target_is_directory=True)  # a link back up
    classes, files = read_image_folder(str(folder))
    assert classes == ["cat", "dog"]
    dog = [os.path.relpath(path, folder) for path, label in files if label == 1]
    assert dog == ["dog/d0.jpg", "dog/d1.jpg", "dog/d2.jpg", "dog/more/x.jpg"]
    assert walk_files(str(folder / "dog")) == [str(folder / p) for p in dog]


@pytest.fixture(scope="module")
def server(model_base):
    server = start_local_server(model_base)
    yield server
    server.stop()


def test_predict_and_predict_evaluate_both_read_a_folder_whose_class_is_a_symlink(server, tmp_path, capsys):
    folder = photos_with_a_linked_class(tmp_path)
    address = ["--grpc", f"127.0.0.1:{server.grpc_port}", "--model", "pets"]
    assert cli.main([*address, "--jsonl", str(folder)]) == 0
    out, err = capsys.readouterr()
    sources = [json.loads(line)["source"] for line in out.splitlines()]
    assert sources == expand_paths([str(folder)]) and len(sources) == 6
    assert "6 of 6 images classified" in err
    assert cli.main(["evaluate", str(folder), *address, "--output", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["images"], report["answered"]) == (6, 6)

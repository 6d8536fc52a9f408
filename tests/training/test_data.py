import pytest

from tests.conftest import make_image_folder
from training.data import DataError, load_image_folder, stratified_split


def test_split_is_80_10_10_per_class_and_seeded(tmp_path):
    folder = make_image_folder(tmp_path / "p", per_class=20)
    first = load_image_folder(str(folder), seed=3)
    again = load_image_folder(str(folder), seed=3)
    assert (first.train.count, first.validation.count, first.test.count) == (32, 4, 4)
    assert first.class_names == ["cat", "dog"]
    labels = [int(y) for _, y in first.test.images]
    assert sorted(labels) == [0, 0, 1, 1]
    assert [int(y) for _, y in again.test.images] == labels


def test_splits_do_not_overlap():
    files = [(f"f{i}", i % 3) for i in range(60)]
    parts = stratified_split(files, seed=1)
    names = [set(p for p, _ in part) for part in parts]
    assert sum(len(n) for n in names) == 60 and not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])


def test_corrupt_and_empty_files_are_skipped_and_counted(tmp_path):
    folder = make_image_folder(tmp_path / "p", per_class=10)
    (folder / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg")
    (folder / "dog" / "empty.jpg").write_bytes(b"")
    (folder / "dog" / "notes.txt").write_text("not an image")
    data = load_image_folder(str(folder))
    skipped = sum(s.skipped for s in data.splits().values())
    used = sum(s.count for s in data.splits().values())
    assert (skipped, used) == (3, 20)
    reasons = {p.rsplit("/", 1)[-1]: r for s in data.splits().values() for p, r in s.skipped_files}
    assert reasons["empty.jpg"] == "empty file"
    assert set(reasons) == {"broken.jpg", "empty.jpg", "notes.txt"}
    # Every image that is used decodes: iterating the splits raises nothing.
    assert sum(1 for s in data.splits().values() for _ in s.images) == 20


def test_max_images_takes_a_balanced_subset(tmp_path):
    folder = make_image_folder(tmp_path / "p", per_class=20)
    data = load_image_folder(str(folder), max_images=10)
    assert sum(s.count for s in data.splits().values()) == 10


@pytest.mark.parametrize("classes,message", [((), "at least 2 classes"), (("only",), "at least 2 classes")])
def test_folder_without_two_classes_is_refused(tmp_path, classes, message):
    folder = make_image_folder(tmp_path / "p", classes=classes, per_class=3)
    folder.mkdir(exist_ok=True)
    with pytest.raises(DataError, match=message):
        load_image_folder(str(folder))


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        load_image_folder(str(tmp_path / "nowhere"))


def test_an_unreachable_download_fails_at_once_with_the_way_out(monkeypatch):
    from training.data import _check_download_reachable

    for proxy in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    with pytest.raises(DataError, match="cannot reach nowhere.invalid.*--tfds-data-dir.*--data-dir"):
        _check_download_reachable("cats_vs_dogs", host="nowhere.invalid", timeout=2)

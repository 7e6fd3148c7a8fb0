"""`path_memory`: auto's CPU path measurements kept per model and machine, in a file that is never half written."""
import json
import os

import pytest

from nnunet_teachformer.inference import path_memory


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setenv(path_memory.MEMORY_ENV, str(tmp_path / "cache"))
    checkpoint, plans = tmp_path / "checkpoint_final.pth", tmp_path / "plans.json"
    checkpoint.write_bytes(b"weights")
    plans.write_text("{}")
    return checkpoint, plans


def key(checkpoint, plans, patch=(32, 128, 128), tolerance=1e-3):
    return path_memory.memory_key(checkpoint, plans, patch, 1, tolerance, ["nnunet", "openvino"])


def test_measurements_are_recalled_under_the_same_facts_only(files):
    checkpoint, plans = files
    assert path_memory.recall(key(*files)) is None
    assert path_memory.remember(key(*files), {"seconds_per_tile": {"nnunet": 0.5}}) is None
    recalled = path_memory.recall(key(*files))
    assert recalled["seconds_per_tile"] == {"nnunet": 0.5} and recalled["measured_at"]
    assert path_memory.recall(key(*files, patch=(32, 64, 64))) is None
    assert path_memory.recall(key(*files, tolerance=1e-2)) is None
    stat = plans.stat()
    os.utime(plans, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))  # plans edited since
    assert path_memory.recall(key(checkpoint, plans)) is None


def test_a_damaged_file_is_measured_anew_and_replaced_whole(files):
    path_memory.memory_file().parent.mkdir(parents=True)
    path_memory.memory_file().write_text('{"half written')
    assert path_memory.recall(key(*files)) is None
    assert path_memory.remember(key(*files), {"a": 1}) is None
    assert list(json.loads(path_memory.memory_file().read_text()).values())[0]["a"] == 1
    assert [p.name for p in path_memory.memory_file().parent.iterdir()] == ["cpu_path_choices.json"]


def test_only_the_newest_entries_are_kept(files, tmp_path):
    for i in range(path_memory.KEPT + 3):
        path_memory.remember(f"key {i}", {"i": i})
    kept = json.loads(path_memory.memory_file().read_text())
    assert len(kept) == path_memory.KEPT and "key 0" not in kept and f"key {path_memory.KEPT + 2}" in kept


def test_an_unwritable_place_is_a_reason_not_a_failure(files, tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the folder would be")
    monkeypatch.setenv(path_memory.MEMORY_ENV, str(blocker / "cache"))
    assert path_memory.remember(key(*files), {"a": 1})
    assert path_memory.recall(key(*files)) is None

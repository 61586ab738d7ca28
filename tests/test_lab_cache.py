import json
import os
import warnings

import pytest

from companion.lab import cache
from companion.lab.cache import atomic_write, atomic_write_json, cache_dir, check_manifest, write_manifest


def test_cache_dir_honours_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "c"))
    assert cache_dir("models") == tmp_path / "c" / "models"
    assert (tmp_path / "c" / "models").is_dir()


def test_unwritable_cache_falls_back_with_a_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("COMPANION_CACHE", str(blocker / "cache"))  # cannot mkdir under a file, even as root
    with pytest.warns(UserWarning, match="not writable"):
        folder = cache_dir("x")
    assert folder.is_dir() and blocker not in folder.parents


def test_no_writable_folder_at_all_says_what_to_set(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("COMPANION_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(cache.tempfile, "gettempdir", lambda: str(blocker))
    with pytest.raises(PermissionError, match="COMPANION_CACHE"):
        cache_dir()


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_manifest_detects_missing_truncated_and_corrupted_files(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"0123456789")
    (tmp_path / "b.json").write_text("{}")
    assert "missing" in check_manifest(tmp_path)
    write_manifest(tmp_path)
    assert check_manifest(tmp_path) is None
    (tmp_path / "a.bin").write_bytes(b"01234")
    assert "truncated" in check_manifest(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"0123456788")  # same size, one byte changed
    assert "SHA-256" in check_manifest(tmp_path)
    assert check_manifest(tmp_path, verify_digests=False) is None
    (tmp_path / "b.json").unlink()
    assert "missing" in check_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    assert "unreadable" in check_manifest(tmp_path)


def test_atomic_write_json_round_trip(tmp_path):
    atomic_write_json(tmp_path / "r.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": [1, 2], "b": 1}
    assert not [p for p in os.listdir(tmp_path) if "tmp" in p]

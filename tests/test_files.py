"""Atomic writes: whole files or none, and OS failures named."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from lowlabel.errors import LowlabelError
from lowlabel.files import atomic_path, read_json, write_json, write_text


def test_write_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "deep" / "out.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert read_json(target) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_failure_inside_the_block_keeps_the_old_file(tmp_path):
    target = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_full_disk_is_a_named_error(tmp_path, monkeypatch):
    def full(self: Path, *args: object, **kwargs: object) -> int:
        Path.write_bytes(self, b"par")  # part of the data reached the disk before it filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    target = write_text(tmp_path / "summary.json", "{}")
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(LowlabelError, match=r"summary\.json.*No space left"):
        write_json(target, {"a": 1})
    monkeypatch.undo()
    assert target.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


@pytest.mark.parametrize("content", [b"{\"a\": ", b"\xff\xfe\x00", b""])
def test_corrupt_json_is_named(tmp_path, content):
    bad = tmp_path / "run.json"
    bad.write_bytes(content)
    with pytest.raises(LowlabelError, match=r"run\.json"):
        read_json(bad)
    with pytest.raises(LowlabelError, match="does not exist"):
        read_json(tmp_path / "missing.json")


def test_a_parent_that_is_a_file_is_named(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(LowlabelError, match=r"could not write .*runs/summary\.json"):
        write_json(tmp_path / "runs" / "summary.json", {})

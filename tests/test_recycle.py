"""app.server.recycle: a worker's mark that it left at its request cap, read once by the master."""

from __future__ import annotations

import os
from pathlib import Path

from app.server.recycle import MARKS, collect, mark


def test_a_mark_is_collected_once(tmp_path: Path) -> None:
    mark(tmp_path)
    mark(tmp_path, 12345)
    assert sorted(collect(tmp_path)) == sorted([os.getpid(), 12345])
    assert collect(tmp_path) == []


def test_no_marks_yet_is_none_collected(tmp_path: Path) -> None:
    assert collect(tmp_path) == []
    assert collect(tmp_path / "gone") == []


def test_a_stray_file_among_the_marks_is_no_pid(tmp_path: Path) -> None:
    mark(tmp_path, 7)
    (tmp_path / MARKS / "notes.txt").touch()
    assert collect(tmp_path) == [7]
    assert not list((tmp_path / MARKS).iterdir())

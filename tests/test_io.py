"""mechlab.io's writers: all or nothing, and nothing left behind when a write fails."""

import errno
import os

import pytest

from mechlab.errors import InputError
from mechlab.io import json_text, write_files


def test_files_are_written_together(tmp_path):
    out = tmp_path / "a" / "b"
    written = write_files(out, {"x.json": json_text({"k": 1}), "sub/y.png": b"\x89PNG"})
    assert sorted(p.relative_to(out).as_posix() for p in written) == ["sub/y.png", "x.json"]
    assert (out / "sub" / "y.png").read_bytes() == b"\x89PNG"
    assert not [p for p in out.rglob(".*.tmp")]


def test_a_failed_write_leaves_no_file_and_no_directory_it_made(tmp_path, monkeypatch):
    """A full disk at the last moment (the renames): one line, and the output directory the
    command would have made is gone again, while what was there before stays."""
    (tmp_path / "kept").mkdir()
    out = tmp_path / "kept" / "new" / "deeper"

    def full_disk(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(InputError, match="No space left on device") as error:
        write_files(out, {"a.json": "{}", "figures/b.png": b"x"})
    assert "\n" not in str(error.value)
    assert (tmp_path / "kept").is_dir() and not (tmp_path / "kept" / "new").exists()


def test_a_failed_write_into_an_existing_directory_removes_nothing_of_its(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("mine")

    def full_disk(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(InputError):
        write_files(tmp_path / "out", {"a.json": "{}"})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["old.txt"]

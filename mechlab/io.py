"""Reading and writing mechlab's files safely.

Writing: every target is checked before any work starts (`check_output_targets`), every file is
written to a temporary name in its own directory and renamed into place (`atomic_path`), and a
command's files are written together (`write_files`): all the temporaries first, the renames last,
so an error leaves no partial or corrupt output behind; the renames happen under a lock on the
directory, so two commands writing to the same directory at once leave the last one's whole set of
files, never a mix (`directory_lock`; commands that write checkpoints as they go hold it for the
whole run and refuse a second one). JSON is strict (`json_text`): NaN and
infinities, which JSON does not have, are written as null.

Reading what mechlab wrote earlier (a tuned lens, a training checkpoint): one reader per format,
`read_json_object` and `read_safetensors`, each turning anything wrong with the file (unreadable,
truncated, not the expected kind, non-finite numbers, wrong shapes) into one DataError that names
the file and says what to do; `Fields` checks each field read from a JSON object the same way.
Nothing is ever unpickled.
"""

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from mechlab.defaults import MAX_PROMPTS, MAX_PROMPTS_FILE_BYTES
from mechlab.errors import DataError, InputError


def model_slug(spec: str) -> str:
    """A directory name for a model spec: 'EleutherAI/pythia-70m' -> 'EleutherAI_pythia-70m'."""
    return "".join(c if c.isalnum() or c in "-._@" else "_" for c in spec.strip("/.~")) or "model"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; when the block succeeds it is renamed to `path`.
    OSErrors propagate: callers turn them into the error their users understand."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_targets(
    out: str | Path, names: Iterable[str] = (), *, flag: str = "--out"
) -> Path:
    """Check, without creating anything, that `out` can be a directory of ours and that none of the
    file `names` in it (which may contain subdirectories) is taken by a directory. Call it before
    any work, so that a bad --out costs nothing and leaves nothing behind. `flag` is the option the
    errors tell the user to change."""
    out = Path(out)
    fix = f"Choose another {flag}."
    existing = _nearest_existing(out)
    if not existing.is_dir():
        what = "it is" if existing == out.absolute() else f"{str(existing)!r} is"
        raise InputError(
            f"cannot write to output directory {str(out)!r}: {what} a file, not a directory. {fix}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(
            f"cannot write to output directory {str(out)!r}: {str(existing)!r} is not "
            f"writable. {fix}"
        )
    for name in names:
        target = out / name
        existing = _nearest_existing(target)
        if existing == target.absolute() and target.is_dir():
            raise InputError(
                f"cannot write {str(target)!r}: a directory of that name is in the way. "
                f"Remove it or choose another {flag}."
            )
        if existing != target.absolute() and not existing.is_dir():
            raise InputError(
                f"cannot write {str(target)!r}: {str(existing)!r} is a file, not a directory. {fix}"
            )
    return out


# The output directories this process holds a lock on (resolved path -> file descriptor), so that
# a command holding its directory's lock for the whole run can still write its files there.
_HELD: dict[Path, int] = {}


def _lock(directory: Path, blocking: bool) -> int | None:
    """flock an exclusive lock on the directory itself (no lock file is added to it); the fd, or
    None when another process holds it and `blocking` is False."""
    import fcntl

    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def directory_lock(directory: str | Path, *, blocking: bool = True, flag: str = "--out"):
    """Hold the exclusive lock of an existing output directory. Blocking: wait for another
    mechlab process to finish writing there. Not blocking: refuse at once (InputError) when one
    is running there, for commands that keep writing checkpoints during a long run. Re-entrant
    within this process."""
    import fcntl

    key = Path(directory).resolve()
    if key in _HELD:
        yield
        return
    fd = _lock(key, blocking)
    if fd is None:
        raise InputError(
            f"another mechlab command is writing to {str(directory)!r} now: wait for it to "
            f"finish, or choose another {flag}."
        )
    _HELD[key] = fd
    try:
        yield
    finally:
        del _HELD[key]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def output_writes(out: str | Path, *, flag: str = "--out") -> Iterator[None]:
    """Turn a failure to write in the block (disk full, read-only, permissions) into one line
    naming the output directory, for files a command writes as it goes (checkpoints)."""
    try:
        yield
    except OSError as error:
        raise InputError(
            f"cannot write to output directory {str(out)!r}: {error.strerror or error}. "
            f"Choose another {flag}."
        ) from None


def check_free_space(out: str | Path, needed: int, what: str, *, flag: str = "--out") -> None:
    """Refuse, before any work, a command whose files need more room than the disk under `out`
    has."""
    existing = _nearest_existing(Path(out))
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise InputError(
            f"{what} needs about {needed / 2**20:,.0f} MiB in {str(out)!r} but only "
            f"{free / 2**20:,.0f} MiB is free there: free some space or choose another {flag}."
        )


@contextlib.contextmanager
def exclusive_run(out: str | Path, *, flag: str = "--out") -> Iterator[Path]:
    """For a command that writes to `out` as it goes (checkpoints): create the directory if need
    be and hold its lock, refusing at once when another mechlab command holds it; if the command
    made the directory and leaves it empty (an error before anything was written), remove it."""
    out = check_output_targets(out, flag=flag)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(
            f"cannot write to output directory {str(out)!r}: {error.strerror or error}. "
            f"Choose another {flag}."
        ) from None
    try:
        with directory_lock(out, blocking=False, flag=flag):
            yield out
    finally:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty


def write_files(
    out: str | Path, files: Mapping[str, bytes | str], *, flag: str = "--out"
) -> list[Path]:
    """Write every file (name relative to `out` -> content) all or nothing: targets are checked,
    each file goes to a temporary name, and only when all are written are they renamed into
    place. `flag` is the option an error tells the user to change."""
    out = check_output_targets(out, files, flag=flag)
    written: list[tuple[Path, Path]] = []
    created: list[Path] = []  # directories made here, outermost first: removed again on failure
    done = False
    try:
        for name, content in files.items():
            path = out / name
            missing = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
            for directory in reversed(missing):
                directory.mkdir()
                created.append(directory)
            fd, name_of_temporary = tempfile.mkstemp(
                dir=path.parent, prefix=f".{path.name}-", suffix=".tmp"
            )
            written.append((Path(name_of_temporary), path))
            with os.fdopen(fd, "wb") as f:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
            os.chmod(name_of_temporary, 0o644)
        # The renames under the directory's lock: two commands writing the same --out at once
        # each leave a whole set of files (the last one's), never a mix of the two.
        with directory_lock(out, flag=flag):
            for tmp, path in written:
                os.replace(tmp, path)
        done = True
    except OSError as error:
        raise InputError(
            f"cannot write to output directory {str(out)!r}: {error.strerror or error}. "
            f"Choose another {flag}."
        ) from None
    finally:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        for directory in reversed(created if not done else []):
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if still empty: nothing of anyone else's is removed
    return [path for _, path in written]


def finite_or_null(data):
    """`data` with every NaN or infinite float replaced by None (null in JSON)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_or_null(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_null(value) for value in data]
    return data


def json_text(data) -> str:
    """Strict JSON (any parser reads it): NaN and infinities become null."""
    return json.dumps(finite_or_null(data), indent=1, ensure_ascii=False, allow_nan=False) + "\n"


# --------------------------------------------------------------------------------------------------
# Reading files mechlab wrote


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def read_json_object(path: str | Path, *, fix: str) -> dict:
    """The JSON object in `path`. Unreadable, not JSON, NaN or Infinity inside, or not an object:
    a DataError naming the file, what is wrong, and `fix` (what the user can do)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text, parse_constant=_refuse_constant)
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(
            f"cannot read {path}: {getattr(error, 'strerror', None) or error}; {fix}"
        ) from None
    except ValueError as error:
        raise DataError(f"{path} is not valid JSON ({error}); {fix}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} holds a JSON {type(data).__name__}, not an object; {fix}")
    return data


class Fields:
    """Typed reads from a JSON object that came from `path`; a missing or ill-typed field is a
    DataError naming the file and the field, with `fix`."""

    def __init__(self, record: dict, path: str | Path, fix: str):
        self.record, self.path, self.fix = record, Path(path), fix

    def _wrong(self, key: str, expected: str) -> DataError:
        value = self.record.get(key, "missing")
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        return DataError(f"{self.path}: {key!r} should be {expected}, got {shown}; {self.fix}")

    def integer(self, key: str, minimum: int | None = None) -> int:
        value = self.record.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(key, "an integer")
        if minimum is not None and value < minimum:
            raise self._wrong(key, f"an integer >= {minimum}")
        return value

    def number(self, key: str) -> float:
        value = self.record.get(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise self._wrong(key, "a finite number")
        return float(value)

    def text(self, key: str) -> str:
        value = self.record.get(key)
        if not isinstance(value, str):
            raise self._wrong(key, "a string")
        return value

    def numbers(self, key: str) -> list[float]:
        value = self.record.get(key)
        if not isinstance(value, list) or not all(
            not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            for v in value
        ):
            raise self._wrong(key, "a list of finite numbers")
        return [float(v) for v in value]

    def object(self, key: str) -> dict:
        value = self.record.get(key)
        if not isinstance(value, dict):
            raise self._wrong(key, "an object")
        return value


def read_safetensors(
    path: str | Path,
    *,
    fix: str,
    shapes: dict[str, tuple[int, ...]] | None = None,
    float_dtype: str | None = None,
) -> tuple[dict, dict]:
    """The tensors in the safetensors file `path` (safetensors: nothing is unpickled). A file that
    is missing, truncated, has a bad header, holds NaN or infinities, (with `shapes`) does not hold
    exactly those names and shapes, or (with `float_dtype`, e.g. "float32") holds floating tensors
    of another dtype: a DataError naming the file, what is wrong, and `fix`. Returns
    ({name: torch.Tensor}, the file's string metadata)."""
    import torch
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as file:
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (safe_open is not iterable)
            metadata = file.metadata() or {}
    except (OSError, SafetensorError) as error:
        why = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise DataError(f"cannot read {path} as safetensors ({why}); {fix}") from None
    if shapes is not None:
        found = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
        if found != {name: tuple(shape) for name, shape in shapes.items()}:
            raise DataError(f"{path} holds {found}, not the expected {dict(shapes)}; {fix}")
    for name, tensor in tensors.items():
        wanted = getattr(torch, float_dtype) if float_dtype is not None else tensor.dtype
        if tensor.is_floating_point() and tensor.dtype != wanted:
            stored = str(tensor.dtype).removeprefix("torch.")
            raise DataError(f"{path}: tensor {name!r} is {stored}, not {float_dtype}; {fix}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise DataError(f"{path}: tensor {name!r} holds NaN or infinite values; {fix}")
    return tensors, metadata


def write_text(path: str | Path, text: str) -> Path:
    """Write one text file atomically (for files outside a command's output set)."""
    path = Path(path)
    return write_files(path.parent, {path.name: text})[0]


def write_json(path: str | Path, data) -> Path:
    return write_text(path, json_text(data))


def figure_png(figure, dpi: int = 120) -> bytes:
    """Render a matplotlib figure to PNG bytes."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def save_figure(figure, path: str | Path) -> Path:
    """Save a matplotlib figure as a PNG file atomically."""
    path = Path(path)
    return write_files(path.parent, {path.name: figure_png(figure)})[0]


def ensure_writable_dir(directory: str | Path) -> Path:
    """Create `directory` if needed (after checking it can be ours); for scripts that write as they
    go."""
    directory = check_output_targets(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(
            f"cannot write to output directory {str(directory)!r}: {error.strerror or error}. "
            "Choose another --out."
        ) from None
    return directory


def read_prompts(path: str) -> list[str]:
    """One prompt per '\\n'-terminated line (a trailing '\\r' is dropped; U+2028, form feeds and the
    like stay inside their prompt), blank lines skipped; at most MAX_PROMPTS_FILE_BYTES are read."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PROMPTS_FILE_BYTES + 1)
    except OSError as error:
        raise InputError(f"cannot read prompts file {path!r}: {error.strerror or error}") from None
    if len(data) > MAX_PROMPTS_FILE_BYTES:
        raise InputError(
            f"prompts file {path!r} is larger than {MAX_PROMPTS_FILE_BYTES >> 20} MiB: "
            "split it into smaller files"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"prompts file {path!r} is not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    prompts = [line.removesuffix("\r") for line in text.split("\n")]
    prompts = [prompt for prompt in prompts if prompt.strip()]
    if not prompts:
        raise InputError(f"no prompts in {path!r}: write one prompt per line")
    if len(prompts) > MAX_PROMPTS:
        raise InputError(
            f"prompts file {path!r} has {len(prompts):,} prompts, more than "
            f"{MAX_PROMPTS:,}: split it into smaller files"
        )
    return prompts

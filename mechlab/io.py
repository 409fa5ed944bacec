"""Writing output files safely. Every target is checked before any work starts
(`check_output_targets`), every file is written to a temporary name in its own directory and renamed
into place (`atomic_path`), and a command's files are written together (`write_files`): all the
temporaries first, the renames last, so an error leaves no partial or corrupt output behind."""

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from mechlab.errors import InputError


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


def check_output_targets(out: str | Path, names: Iterable[str] = ()) -> Path:
    """Check, without creating anything, that `out` can be a directory of ours and that none of the
    file `names` in it (which may contain subdirectories) is taken by a directory. Call it before
    any
    work, so that a bad --out costs nothing and leaves nothing behind."""
    out = Path(out)
    fix = "Choose another --out."
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
                f"Remove it or choose another --out."
            )
        if existing != target.absolute() and not existing.is_dir():
            raise InputError(
                f"cannot write {str(target)!r}: {str(existing)!r} is a file, not a directory. {fix}"
            )
    return out


def write_files(out: str | Path, files: dict[str, bytes | str]) -> list[Path]:
    """Write every file (name relative to `out` -> content) all or nothing: targets are checked,
    each file goes to a temporary name, and only when all are written are they renamed into
    place."""
    out = check_output_targets(out, files)
    written: list[tuple[Path, Path]] = []
    try:
        for name, content in files.items():
            path = out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
            written.append((Path(tmp), path))
            with os.fdopen(fd, "wb") as f:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
            os.chmod(tmp, 0o644)
        for tmp, path in written:
            os.replace(tmp, path)
    except OSError as error:
        raise InputError(
            f"cannot write to output directory {str(out)!r}: {error.strerror or error}. "
            "Choose another --out."
        ) from None
    finally:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
    return [path for _, path in written]


def json_text(data) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


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

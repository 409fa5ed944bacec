"""Writing output files safely: every file is written to a temporary name in the same directory and
renamed into place, so an error or a crash never leaves a partial or corrupt file behind."""

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mechlab.errors import InputError


def model_slug(spec: str) -> str:
    """A directory name for a model spec: 'EleutherAI/pythia-70m' -> 'EleutherAI_pythia-70m'."""
    return "".join(c if c.isalnum() or c in "-._@" else "_" for c in spec.strip("/.~")) or "model"


def ensure_writable_dir(directory: str | Path) -> Path:
    """Create `directory` if needed and check that files can be created in it."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".mechlab-probe-"):
            pass
    except OSError as error:
        raise InputError(f"cannot write to output directory {str(directory)!r}: {error.strerror or error}. "
                         "Choose another --out.") from None
    return directory


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; when the block succeeds it is renamed to `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=path.suffix)
    except OSError as error:
        raise InputError(f"cannot write {str(path)!r}: {error.strerror or error}. Choose another path.") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data) -> Path:
    return write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def figure_png(figure) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it (open figures hold memory)."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def save_figure(figure, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    return write_bytes(path, figure_png(figure))

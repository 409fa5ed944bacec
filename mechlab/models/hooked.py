"""What every kind of model load shares: TransformerLens's weight-processing flags, its deprecation
warning silenced, and a library error's first line for a one-line message."""

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@contextlib.contextmanager
def quiet_hooked_deprecation() -> Iterator[None]:
    """Silence exactly TransformerLens 3.9's "HookedTransformer is deprecated" warning.

    3.9 emits it on every model construction and every ``from_pretrained``; mechlab pins
    ``transformer-lens<4`` on purpose (4.0 removed HookedTransformer), so the warning tells our
    users nothing they can act on. Every other warning still shows.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"HookedTransformer(\.from_pretrained)? is deprecated",
            category=DeprecationWarning,
        )
        yield


@dataclass(frozen=True)
class Processing:
    """TransformerLens's weight processing flags (see HookedTransformer.from_pretrained)."""

    fold_ln: bool = True
    center_writing_weights: bool = True
    center_unembed: bool = True

    @property
    def tag(self) -> str:
        return (
            "-".join(
                name
                for name, on in [
                    ("fold", self.fold_ln),
                    ("cw", self.center_writing_weights),
                    ("cu", self.center_unembed),
                ]
                if on
            )
            or "raw"
        )


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (library errors can run to thirty lines)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or Path(spec).expanduser().is_dir()

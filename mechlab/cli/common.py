"""What every command shares: one-line errors, the clean way out on Ctrl-C or SIGTERM, the checks
made before a model loads, and the steps of the skeleton each command follows:

    validate arguments -> check output targets -> load -> compute -> present -> write -> say

The files a command checks before any work are named by the same present function that builds
them (e.g. `lens_file_names` next to `lens_files`, which checks its result against them), so the
list checked and the files written cannot drift apart.
"""

import argparse
import contextlib
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mechlab.defaults import DEFAULT_MODEL
from mechlab.errors import InputError, MechlabError, MechlabWarning
from mechlab.terminal import one_line, visible

if TYPE_CHECKING:
    from rich.console import Console
    from transformer_lens import HookedTransformer

    from mechlab.corpus import Corpus

# what `add_parser` of each command module adds its subcommand to
Subcommands = argparse._SubParsersAction


class UsageError(Exception):
    """An argument error found by argparse, reported as one line like every other error."""


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line ("mechlab lens: error: ... (see mechlab lens --help)")
    instead of a usage dump, and it is raised instead of exiting, so `main` returns 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's stop, `kill`) takes Ctrl-C's clean way out: checkpoints saved, an
    empty output directory removed, no partial file. Only in the main thread, where Python
    delivers signals; the previous handler is put back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> NoReturn:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(args: argparse.Namespace, command: str) -> int:
    """Run the parsed command: mechlab's errors become one line and exit status 2, Ctrl-C 130."""
    try:
        with warnings.catch_warnings():
            # mechlab's own caveats, one line each; other libraries' warnings (matplotlib's
            # missing glyphs, ...) are not the user's business
            warnings.simplefilter("ignore")
            warnings.simplefilter("always", MechlabWarning)
            warnings.showwarning = lambda message, *_: warn(
                f"mechlab {command}: warning: {message}"
            )
            return args.run(args) or 0
    except MechlabError as error:
        print(f"mechlab {command}: error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mechlab {command}: interrupted; no files were written", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------------------------------
# Before loading


def float32_only(args: argparse.Namespace, what: str) -> None:
    if args.dtype != "float32":
        raise InputError(
            f"{what} is trained on, and tied by hash to, the float32 weights: drop --dtype "
            f"{args.dtype} (or use --dtype float32)."
        )


def check_layers_before_loading(spec: str, layers: list[int]) -> None:
    """Refuse a layer out of range before the model loads, where its shape is known without loading
    it (defaults.known_n_layers); the library checks every other model once it is loaded."""
    from mechlab.defaults import known_n_layers

    n_layers = known_n_layers(spec)
    for layer in layers:
        if n_layers is not None and not 0 <= layer < n_layers:
            raise InputError(
                f"layer {layer} is out of range: {spec} has layers 0 .. {n_layers - 1}"
            )


def check_prompt(prompt: str) -> None:
    if not prompt.strip():
        raise InputError(
            "the prompt is empty: pass some text, e.g. --prompt 'The capital of France is'"
        )


def model_specs(args: argparse.Namespace) -> list[str]:
    """The specs of a repeatable --model, each once (the default model when none is given)."""
    from mechlab.io import model_slug

    specs = args.model or [DEFAULT_MODEL]
    if len(set(map(model_slug, specs))) != len(specs):
        raise InputError(f"the same model is given twice: {specs}")
    return specs


def check_targets(out: str | Path, names: list[str], **options: Any) -> Path:
    """Check every output target before any work (mechlab.io.check_output_targets)."""
    from mechlab import io

    return io.check_output_targets(out, names, **options)


# --------------------------------------------------------------------------------------------------
# Load, write, say


def placement(args: argparse.Namespace) -> dict:
    """load_model's device and dtype from --device and --dtype, where the command has them."""
    return {name: getattr(args, name) for name in ("device", "dtype") if hasattr(args, name)}


def load(args: argparse.Namespace, spec: str | None = None) -> "HookedTransformer":
    """The model of --model (or `spec`), placed by --device and --dtype."""
    from mechlab.models.loading import load_model

    return load_model(spec or args.model, **placement(args))


def corpus(args: argparse.Namespace, *, tokens: int | None, spec: str | None = None) -> "Corpus":
    """The text of --corpus (or `spec`), --text-column and --held-out, read up to about `tokens`
    tokens; called before the model loads, so that bad text is refused first."""
    from mechlab.corpus import load_corpus

    return load_corpus(
        spec or args.corpus, text_column=args.text_column, tokens=tokens, held_out=args.held_out
    )


def write(out: str | Path, files: Mapping[str, bytes | str], **options: Any) -> list[Path]:
    """Write the files all or nothing (mechlab.io.write_files)."""
    from mechlab import io

    return io.write_files(out, files, **options)


def console() -> "Console":
    from rich.console import Console

    return Console()


def say(text: str) -> None:
    """Print plain text through rich without reading it as markup (paths and names may hold '['),
    control characters shown escaped."""
    console().print(visible(text), markup=False, highlight=False)


def warn(text: str) -> None:
    """One line on stderr, control characters shown escaped."""
    print(one_line(text), file=sys.stderr)

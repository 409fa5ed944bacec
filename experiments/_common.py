"""Argument parsing shared by the experiment scripts (each is also a notebook: see its
# %% cells)."""

import argparse
import os
import sys

from mechlab.defaults import DEFAULT_MODEL
from mechlab.models.hub import hub_cached


def default_model() -> str:
    """GPT-2 small when its weights are in the Hugging Face cache, else the offline default."""
    return "gpt2" if hub_cached("gpt2") else DEFAULT_MODEL


def parse(description: str, **extra) -> argparse.Namespace:
    """`extra`: name=(type, default, help), or (type, default, help, quick default) for a budget
    that the notebook test shrinks by setting $MECHLAB_EXPERIMENTS_QUICK (the full run is the
    experiment; the test only checks that it runs end to end)."""
    quick = bool(os.environ.get("MECHLAB_EXPERIMENTS_QUICK"))
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", action="append", help=f"model spec (default: {default_model()})")
    # $MECHLAB_EXPERIMENTS_OUT moves the default, for notebooks (which take no arguments).
    out = os.environ.get("MECHLAB_EXPERIMENTS_OUT", "out/experiments")
    parser.add_argument(
        "--out", default=out, help=f"directory for figures and JSON (default {out})"
    )
    for name, (kind, default, help_text, *small) in extra.items():
        default = small[0] if quick and small else default
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=default, help=help_text
        )
    # In a notebook (VS Code, Jupyter) sys.argv holds the kernel's arguments: use the defaults
    # there.
    args = parser.parse_args([] if "ipykernel" in sys.modules else None)
    args.model = args.model or [default_model()]
    return args

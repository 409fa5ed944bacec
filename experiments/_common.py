"""Argument parsing shared by the experiment scripts (each is also a notebook: see its
# %% cells)."""

import argparse
import os
import sys

from mechlab.loading import DEFAULT_MODEL, hub_cached


def default_model() -> str:
    """GPT-2 small when its weights are in the Hugging Face cache, else the offline default."""
    return "gpt2" if hub_cached("gpt2") else DEFAULT_MODEL


def parse(description: str, **extra) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", action="append", help=f"model spec (default: {default_model()})")
    # $MECHLAB_EXPERIMENTS_OUT moves the default, for notebooks (which take no arguments).
    out = os.environ.get("MECHLAB_EXPERIMENTS_OUT", "out/experiments")
    parser.add_argument(
        "--out", default=out, help=f"directory for figures and JSON (default {out})"
    )
    for name, (kind, default, help_text) in extra.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=default, help=help_text
        )
    # In a notebook (VS Code, Jupyter) sys.argv holds the kernel's arguments: use the defaults
    # there.
    args = parser.parse_args([] if "ipykernel" in sys.modules else None)
    args.model = args.model or [default_model()]
    return args

"""`mechlab models`: the model specs, and whether each loads offline now."""

import argparse

from mechlab.cli.common import Subcommands, console


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "models", help="list model specs and whether each loads offline now"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mechlab.models.loading import cache_dir, model_availability
    from mechlab.present.models import models_table

    console().print(models_table(model_availability(), cache_dir()))
    return 0

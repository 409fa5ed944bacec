"""The `mechlab` command: one subcommand per capability, one module per subcommand. Each module
declares its arguments (`add_parser`) and a `run` that parses nothing and computes nothing itself:
it checks, loads, calls the library, presents and writes (the skeleton in `common`). Errors
become one line on stderr and exit status 2.

Only the standard library and mechlab's light modules are imported before the arguments are
checked: `mechlab --help` and every argument error answer at once, and torch, TransformerLens and
matplotlib are imported by the subcommand that runs.
"""

import sys

from mechlab.cli import (
    attention,
    attribute,
    circuits,
    dla,
    heads,
    lens,
    models,
    neurons,
    patch,
    predict,
    report,
    sae,
    train_grokking,
    train_induction,
    tune_lens,
    verify,
)
from mechlab.cli.arguments import heads_list
from mechlab.cli.common import Parser, UsageError, run_command, terminate_as_interrupt
from mechlab.moved import moved_names
from mechlab.terminal import one_line

# in the order `mechlab --help` lists them
COMMANDS = [
    models,
    predict,
    verify,
    attention,
    heads,
    patch,
    train_induction,
    train_grokking,
    dla,
    attribute,
    circuits,
    neurons,
    sae,
    lens,
    tune_lens,
    report,
]

__all__ = ["build_parser", "heads_list", "main"]


DESCRIPTION = (
    "The `mechlab` command: one subcommand per capability. It parses arguments, calls the library,"
    "\nand writes files; errors become one line on stderr and exit status 2."
)


def build_parser() -> Parser:
    parser = Parser(prog="mechlab", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(one_line(str(error)), file=sys.stderr)
        return 2
    except SystemExit as exit:  # --help and --version exit through argparse
        return int(exit.code or 0)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    # what messages name: the command and its action ("mechlab sae train: error: ...")
    command = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
    with terminate_as_interrupt():
        return run_command(args, command)


__getattr__ = moved_names(__name__, {"read_prompts": "mechlab.io"})

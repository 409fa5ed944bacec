"""`mechlab dla`: direct logit attribution, what each head and MLP writes into the answer."""

import argparse

from mechlab.cli.arguments import add_answer_options, add_model_option, add_out_option
from mechlab.cli.common import Subcommands, check_targets, console, load, say, write


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "dla", help="direct logit attribution: what each head and MLP writes into the answer"
    )
    add_model_option(parser)
    add_answer_options(parser)
    add_out_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mechlab.present.dla import DLA_FILES

    check_targets(args.out, DLA_FILES)
    from mechlab.analysis.dla import logit_attribution
    from mechlab.present.dla import dla_files, dla_table

    result = logit_attribution(load(args), args.prompt, answer=args.answer, wrong=args.wrong)
    console().print(dla_table(result))
    write(args.out, dla_files(result))
    say(f"wrote {args.out}")
    return 0

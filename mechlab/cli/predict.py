"""`mechlab predict`: a model's top next tokens for a prompt."""

import argparse

from mechlab.cli.arguments import add_model_option, positive_int
from mechlab.cli.common import Subcommands, console, load


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser("predict", help="print a model's top next tokens for a prompt")
    add_model_option(parser)
    parser.add_argument("--prompt", default="The capital of France is")
    parser.add_argument("--top-k", type=positive_int, default=10)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mechlab.analysis.tokens import next_tokens
    from mechlab.present.models import prediction_table

    model = load(args)
    prediction = next_tokens(model, args.prompt, top_k=args.top_k)
    console().print(prediction_table(prediction, spec=args.model))
    return 0

"""`mechlab verify`: the from-scratch Transformer against the library, component by component."""

import argparse
from pathlib import Path

from mechlab.cli.arguments import add_model_option
from mechlab.cli.common import Subcommands, check_targets, console, load, say, write


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "verify",
        help="check the from-scratch Transformer against the library (and against Hugging Face "
        "transformers where the model has a local checkpoint), component by component",
    )
    add_model_option(parser)
    parser.add_argument(
        "--prompt", default="The capital of France is", help="text to run both models on"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.json) if args.json else None
    if path is not None:
        check_targets(path.parent, [path.name], flag="--json")
    from mechlab.present.parity import parity_table, verdict_lines, verify_json
    from mechlab.scratch.parity import verify

    reports = verify(load(args), args.model, args.prompt)
    for report in reports:
        title = f"{args.model}: from-scratch Transformer vs {report.reference}"
        console().print(parity_table(report, title=title))
    if path is not None:
        write(
            path.parent, {path.name: verify_json(reports, args.model, args.prompt)}, flag="--json"
        )
    for line in verdict_lines(reports):
        say(line)
    return 0 if all(report.passed for report in reports) else 1

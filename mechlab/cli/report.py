"""`mechlab report`: parity, the logit lens, the head scan, attention views and the other
sections on one offline page per run, for one model or several."""

import argparse

from mechlab.cli.arguments import add_model_option, add_out_option, positive_int
from mechlab.cli.common import Subcommands, check_targets, model_specs, placement, say


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "report", help="parity, logit lens, head scan and attention views on one offline page"
    )
    add_model_option(parser, repeatable=True)
    parser.add_argument(
        "--seq-len", type=positive_int, default=50, help="head scan: length of r in [BOS] + r + r"
    )
    parser.add_argument(
        "--batch", type=positive_int, default=10, help="head scan: number of sequences"
    )
    add_out_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    specs = model_specs(args)
    check_targets(args.out, ["report.html", "report.json"])
    from mechlab.workflows.report import write_report

    page = write_report(specs, args.out, seq_len=args.seq_len, batch=args.batch, **placement(args))
    say(f"wrote {page}")
    return 0

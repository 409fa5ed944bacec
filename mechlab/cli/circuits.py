"""`mechlab circuits`: QK and OV circuits from the weights alone (no forward pass)."""

import argparse

from mechlab.cli.arguments import add_model_option, add_out_option, positive_int
from mechlab.cli.common import Subcommands, check_targets, console, load, say, write


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "circuits",
        help="QK and OV circuits from the weights alone: composition scores between heads, "
        "copying, against a random baseline (no forward pass)",
    )
    add_model_option(parser)
    parser.add_argument(
        "--top", type=positive_int, default=10, help="strongest compositions to list (default 10)"
    )
    add_out_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mechlab.defaults import known_n_layers
    from mechlab.present.circuits import circuits_file_names

    check_targets(args.out, circuits_file_names(known_n_layers(args.model)))
    from mechlab.analysis.circuits import circuits
    from mechlab.present.circuits import circuits_files, circuits_table

    model = load(args)
    check_targets(args.out, circuits_file_names(model.cfg.n_layers))
    result = circuits(model)
    console().print(circuits_table(result, args.top))
    write(args.out, circuits_files(result, top=args.top))
    say(f"wrote {args.out}")
    return 0

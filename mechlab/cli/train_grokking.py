"""`mechlab train-grokking`: a one-layer Transformer on (a + b) mod p memorises, then generalises;
Fourier analysis and progress measures."""

import argparse

from mechlab.cli.arguments import add_out_option, open_unit_interval, positive_int, prime, seed
from mechlab.cli.common import Subcommands, check_targets, say, warn, write
from mechlab.defaults import GROKKING_FRACTION, GROKKING_P, GROKKING_STEPS


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "train-grokking",
        help="train a one-layer Transformer on (a + b) mod p and watch it memorise, then "
        "generalise; Fourier analysis and progress measures",
    )
    parser.add_argument(
        "--p", type=prime, default=GROKKING_P, help=f"the prime modulus (default {GROKKING_P})"
    )
    parser.add_argument(
        "--fraction",
        type=open_unit_interval,
        help=f"share of the p^2 pairs trained on (default {GROKKING_FRACTION})",
    )
    parser.add_argument(
        "--steps", type=positive_int, help=f"full-batch training steps (default {GROKKING_STEPS})"
    )
    parser.add_argument("--seed", type=seed, default=0)
    add_out_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mechlab.present.grokking import GROKKING_FILES

    check_targets(args.out, GROKKING_FILES)
    from mechlab.present.grokking import grokking_files
    from mechlab.scratch.grokking import train_grokking

    result = train_grokking(p=args.p, fraction=args.fraction, steps=args.steps, seed=args.seed)
    write(args.out, grokking_files(result))
    say(repr(result))
    if result.interrupted:
        warn(f"mechlab train-grokking: interrupted; wrote what was recorded to {args.out}")
        return 130
    say(f"wrote {args.out}")
    return 0

"""`mechlab train-induction`: train attention-only models from scratch and watch induction heads
form."""

import argparse

from mechlab.cli.arguments import add_out_option, positive_int, seed
from mechlab.cli.common import Subcommands, check_targets, say, warn, write
from mechlab.defaults import DEVICES


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "train-induction",
        help="train attention-only models from scratch and watch induction heads form",
    )
    parser.add_argument("--layers", type=positive_int, default=2, help="layers (default 2)")
    parser.add_argument("--heads", type=positive_int, default=8, help="heads per layer (default 8)")
    parser.add_argument(
        "--steps", type=positive_int, default=1000, help="training steps per model (default 1000)"
    )
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument(
        "--eval-every", type=positive_int, default=25, help="steps between checkpoints"
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where to train (default auto: cuda when torch sees a GPU, else cpu; float32)",
    )
    add_out_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mechlab.present.training import FORMATION_FILES

    check_targets(args.out, FORMATION_FILES)
    from mechlab.present.training import formation_files
    from mechlab.scratch.training import train_induction

    formation = train_induction(
        layers=args.layers,
        heads=args.heads,
        steps=args.steps,
        seed=args.seed,
        eval_every=args.eval_every,
        progress=True,
        device=args.device,
    )
    write(args.out, formation_files(formation))
    say(repr(formation))
    if formation.interrupted:
        warn(f"mechlab train-induction: interrupted; wrote what was recorded to {args.out}")
        return 130
    say(f"wrote {args.out}")
    return 0

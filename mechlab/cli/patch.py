"""`mechlab patch`: activation patching, which heads or positions carry the answer from a clean
prompt into a corrupted one."""

import argparse

from mechlab.cli.arguments import add_model_option, add_out_option, token_or_id
from mechlab.cli.common import Subcommands, check_targets, console, load, say, write


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "patch",
        help="activation patching: which heads or positions carry the answer from a clean prompt",
    )
    add_model_option(parser)
    parser.add_argument("--clean", required=True, help="the prompt whose answer is restored")
    parser.add_argument(
        "--corrupted", required=True, help="the same number of tokens, with the answer changed"
    )
    parser.add_argument(
        "--answer",
        type=token_or_id,
        required=True,
        help="the clean answer, one token, e.g. ' Mary', or id:N",
    )
    parser.add_argument(
        "--wrong", type=token_or_id, required=True, help="the corrupted answer, one token"
    )
    parser.add_argument(
        "--over",
        choices=["heads", "resid", "layers"],
        default="heads",
        help="each head's output (per query head), the residual stream at each layer and "
        "position, or each attention and MLP output at each position (default heads)",
    )
    parser.add_argument(
        "--method",
        choices=["exact", "attribution"],
        default="exact",
        help="one patched run per cell, or the first-order estimate from one backward pass",
    )
    add_out_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mechlab.present.patching import patch_file_names

    check_targets(args.out, patch_file_names(args.over))
    from mechlab.analysis.patching import patch
    from mechlab.present.patching import patch_files, patch_table

    result = patch(
        load(args),
        args.clean,
        args.corrupted,
        answer=args.answer,
        wrong=args.wrong,
        over=args.over,
        method=args.method,
        progress=True,
    )
    console().print(patch_table(result))
    write(args.out, patch_files(result))
    say(f"wrote {args.out}")
    return 0

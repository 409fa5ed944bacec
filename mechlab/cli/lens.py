"""`mechlab lens`: the logit lens (or a tuned lens), every layer's residual stream decoded, for one
prompt or a file of prompts."""

import argparse

from mechlab.cli.arguments import add_model_option, add_out_option, positive_int, token_or_id
from mechlab.cli.common import (
    Subcommands,
    check_targets,
    console,
    float32_only,
    load,
    say,
    warn,
    write,
)
from mechlab.defaults import MAX_PROMPTS, MAX_PROMPTS_FILE_BYTES
from mechlab.errors import InputError


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser("lens", help="logit lens: decode every layer's residual stream")
    add_model_option(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt")
    source.add_argument(
        "--prompts-file",
        metavar="FILE",
        help=(
            "one prompt per line (lines end at '\\n'; blank lines are skipped); also per-layer "
            f"curves over all. At most {MAX_PROMPTS_FILE_BYTES >> 20} MiB and {MAX_PROMPTS:,} "
            "prompts"
        ),
    )
    parser.add_argument(
        "--target",
        type=token_or_id,
        help="a single token to follow through the layers, e.g. ' Paris', or id:N",
    )
    parser.add_argument("--top-k", type=positive_int, default=5)
    parser.add_argument(
        "--include-mid", action="store_true", help="also decode between attention and MLP"
    )
    parser.add_argument(
        "--tuned",
        metavar="DIR|auto",
        help="decode through a tuned lens: one saved by `mechlab tune-lens --out DIR`, or 'auto' "
        "for the one cached for this model",
    )
    parser.add_argument(
        "--train-if-missing",
        action="store_true",
        help="with --tuned auto: train and cache the lens if there is none (minutes)",
    )
    add_out_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mechlab.io import read_prompts

    prompts = read_prompts(args.prompts_file) if args.prompts_file else [args.prompt]
    if args.train_if_missing and args.tuned != "auto":
        raise InputError(
            "--train-if-missing trains the lens cached for the model: use it with --tuned auto "
            "(a --tuned DIR is made with `mechlab tune-lens --out DIR`)"
        )
    if args.tuned:
        float32_only(args, "a tuned lens")
    from mechlab.present.lens import lens_file_names

    check_targets(args.out, lens_file_names(curves=len(prompts) > 1))
    from mechlab.analysis.lens import logit_lens, logit_lens_over
    from mechlab.analysis.tuned_lens import tuned_lens_for
    from mechlab.present.lens import lens_files, lens_table

    model = load(args)
    options = dict(target=args.target, top_k=args.top_k, include_mid=args.include_mid)
    if args.tuned:
        options["lens"] = tuned_lens_for(model, args.tuned, train=args.train_if_missing)
    if len(prompts) == 1:
        first, curves = logit_lens(model, prompts[0], **options), None
    else:
        announce = lambda text: warn(f"mechlab lens: {text}")  # noqa: E731
        first, curves = logit_lens_over(model, prompts, progress=True, announce=announce, **options)
    console().print(lens_table(first))
    write(args.out, lens_files(first, curves, prompts if curves is not None else None))
    say(f"wrote {args.out}")
    return 0

"""`mechlab attribute`: token attribution, which tokens of the prompt drive the answer, by every
method, with the model-parameter randomization check on request."""

import argparse

from mechlab.cli.arguments import (
    add_answer_options,
    add_model_option,
    add_out_option,
    count_up_to,
    non_empty,
    non_negative_int,
)
from mechlab.cli.common import Subcommands, check_prompt, check_targets, load, say, write
from mechlab.defaults import (
    ATTRIBUTION_MAX_BUDGET,
    ATTRIBUTION_MAX_STEPS,
    ATTRIBUTION_METHODS,
    ATTRIBUTION_STEP_BUDGET,
)


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "attribute", help="token attribution: which tokens of the prompt drive the answer"
    )
    add_model_option(parser)
    add_answer_options(parser)
    parser.add_argument(
        "--method",
        action="append",
        choices=ATTRIBUTION_METHODS,
        help="repeatable (default: every method)",
    )
    parser.add_argument(
        "--steps",
        type=count_up_to(ATTRIBUTION_MAX_STEPS, 64),
        default=64,
        help="integrated gradients' first quadrature nodes (default 64)",
    )
    parser.add_argument(
        "--max-steps",
        type=count_up_to(ATTRIBUTION_MAX_BUDGET, ATTRIBUTION_STEP_BUDGET),
        default=ATTRIBUTION_STEP_BUDGET,
        help="the most nodes integrated gradients may add until the scores are complete "
        f"(default {ATTRIBUTION_STEP_BUDGET})",
    )
    parser.add_argument(
        "--baseline",
        type=non_empty,
        default="zero",
        help="what a removed token becomes: zero, pad, bos or one token (default zero)",
    )
    parser.add_argument(
        "--layer",
        type=non_negative_int,
        help="layer_gradient_x_activation: the block whose input is weighted (default: middle)",
    )
    parser.add_argument(
        "--sanity",
        action="store_true",
        help="also run the model-parameter randomization check per method (randomization.png)",
    )
    add_out_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_prompt(args.prompt)
    from mechlab.present.attribution import attribution_file_names

    check_targets(args.out, attribution_file_names(sanity=args.sanity))
    from mechlab.analysis.attribution import (
        attribute,
        baseline_token,
        check_layer,
        check_steps,
        randomization_check,
    )
    from mechlab.present.attribution import attribution_files

    check_steps(args.steps, args.max_steps)
    model = load(args)
    if args.layer is not None:  # both checked before any method runs
        check_layer(model, args.layer)
    baseline_token(model, args.baseline)
    options = dict(answer=args.answer, wrong=args.wrong, steps=args.steps, baseline=args.baseline)
    options.update(layer=args.layer, max_steps=args.max_steps, progress=True)
    methods = list(dict.fromkeys(args.method or ATTRIBUTION_METHODS))
    results = [attribute(model, args.prompt, method=method, **options) for method in methods]
    for result in results:
        say(repr(result))
    checks = None
    if args.sanity:
        checks = [
            randomization_check(model, args.prompt, method=method, **options) for method in methods
        ]
        for check in checks:
            say(repr(check))
    write(args.out, attribution_files(results, checks))
    say(f"wrote {args.out}")
    return 0

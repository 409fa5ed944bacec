"""`mechlab attention`: attention patterns as an offline HTML page and a PNG per layer."""

import argparse

from mechlab.cli.arguments import add_model_option, add_out_option, heads_list, non_negative_int
from mechlab.cli.common import (
    Subcommands,
    check_layers_before_loading,
    check_prompt,
    check_targets,
    load,
    say,
    write,
)


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "attention", help="attention patterns as an offline HTML page and PNGs"
    )
    add_model_option(parser)
    parser.add_argument("--prompt", required=True)
    parser.add_argument(
        "--layer",
        type=non_negative_int,
        nargs="+",
        action="extend",
        metavar="L",
        help="layers to show, every head (default: every layer, unless --heads)",
    )
    parser.add_argument(
        "--heads", metavar="L.H,...", type=heads_list, help="single heads to show, e.g. 5.1,5.5"
    )
    add_out_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_prompt(args.prompt)
    from mechlab.present.attention import attention_file_names

    # the layers drawn, when the arguments name them; every layer's are checked once it is loaded
    named = sorted(set(args.layer or []) | {layer for layer, _ in args.heads or []})
    check_layers_before_loading(args.model, named)
    check_targets(args.out, attention_file_names(named))
    from mechlab.analysis.attention import head_patterns, select_heads
    from mechlab.present.attention import attention_files
    from mechlab.present.page import MAX_VIEW_TOKENS

    model = load(args)
    selected = select_heads(model, layers=args.layer or [], heads=args.heads or [])
    check_targets(args.out, attention_file_names([heads[0][0] for heads in selected]))
    layers = [head_patterns(model, args.prompt, heads, last=MAX_VIEW_TOKENS) for heads in selected]
    write(args.out, attention_files(model.cfg.model_name, layers))
    say(f"wrote {args.out}/attention.html and {len(selected)} PNGs")
    return 0

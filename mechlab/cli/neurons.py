"""`mechlab neurons`: what MLP neurons respond to, their top and bottom activations over text;
`mechlab neurons show DIR`: a neuron's page from those records."""

import argparse
from pathlib import Path

from mechlab.cli.arguments import (
    add_corpus_options,
    add_model_option,
    model_spec,
    non_negative_int,
    positive_int,
)
from mechlab.cli.common import (
    Parser,
    Subcommands,
    check_layers_before_loading,
    check_targets,
    corpus,
    load,
    say,
    write,
)
from mechlab.defaults import NEURON_TOKENS
from mechlab.errors import InputError


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "neurons",
        help="what MLP neurons respond to: their top and bottom activations over text "
        "(then `mechlab neurons show DIR` for a neuron's page)",
    )
    add_model_option(parser)
    parser.add_argument(
        "--layer",
        type=non_negative_int,
        action="append",
        help="a layer to record, repeatable (default: every layer)",
    )
    parser.add_argument(
        "--tokens",
        type=positive_int,
        help=f"tokens of text to go through (default {NEURON_TOKENS}, or all there are)",
    )
    add_corpus_options(parser)
    parser.add_argument("--out", help="output directory (neurons.safetensors, neurons.json)")
    parser.set_defaults(run=run)
    actions = parser.add_subparsers(dest="action", metavar="show", parser_class=Parser)
    show = actions.add_parser(
        "show", help="a neuron's page from records made by `mechlab neurons --out DIR`"
    )
    show.add_argument("directory", help="the records' directory")
    show.add_argument(
        "--model",
        metavar="SPEC",
        type=model_spec,
        help="the model the records were made with, if it moved (default: the spec they hold)",
    )
    show.add_argument("--layer", type=non_negative_int, required=True)
    show.add_argument(
        "--neuron", type=non_negative_int, action="append", required=True, help="repeatable"
    )
    show.add_argument(
        "--out",
        required=True,
        help="PAGE.html for one neuron, or a directory for one page per neuron",
    )
    show.set_defaults(run=run_show)


def run(args: argparse.Namespace) -> int:
    if args.out is None:  # optional for `neurons show`, which has its own --out
        raise InputError(
            "the following arguments are required: --out (see 'mechlab neurons --help')"
        )
    from mechlab.present.features import NEURON_FILES

    check_layers_before_loading(args.model, args.layer or [])
    check_targets(args.out, NEURON_FILES)
    from mechlab.analysis.neurons import top_activations
    from mechlab.present.features import neuron_files

    text = corpus(args, tokens=args.tokens or NEURON_TOKENS)
    model = load(args)
    records = top_activations(
        model, text.paragraphs(), layers=args.layer, tokens=args.tokens, progress=True
    )
    records.corpus = text.manifest()
    write(args.out, neuron_files(records))
    say(repr(records))
    say(f"wrote {args.out}; a neuron's page: mechlab neurons show {args.out} --layer L --neuron N")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from mechlab.analysis.neurons import NeuronRecords
    from mechlab.present.features import neuron_page_names

    neurons = list(dict.fromkeys(args.neuron))
    target, names = neuron_page_names(Path(args.out), args.layer, neurons)
    check_targets(target, names)
    records = NeuronRecords.load(args.directory)
    records.layer_index(args.layer)
    for neuron in neurons:
        records.check_neuron(neuron)
    from mechlab.analysis.tokens import token_strings
    from mechlab.present.features import neuron_pages

    model = load(args, args.model or records.spec or records.model)
    records.check_model(
        model, args.directory
    )  # made with this model's weights, its token ids in its vocabulary
    pages = neuron_pages(records, args.layer, neurons, lambda ids: token_strings(model, ids))
    write(target, dict(zip(names, pages, strict=True)))
    say(f"wrote {', '.join(str(target / name) for name in names)}")
    return 0

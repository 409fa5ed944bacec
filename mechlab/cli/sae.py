"""`mechlab sae train`: a TopK sparse autoencoder on one layer's activations, measured;
`mechlab sae show DIR`: its feature dashboards."""

import argparse
from pathlib import Path

from mechlab.cli.arguments import (
    add_corpus_options,
    add_model_option,
    add_out_option,
    model_spec,
    non_negative_int,
    positive_int,
    seed,
)
from mechlab.cli.common import (
    Parser,
    Subcommands,
    check_layers_before_loading,
    check_targets,
    console,
    corpus,
    float32_only,
    load,
    say,
    warn,
    write,
)
from mechlab.defaults import NEURON_TOKENS, SAE_SITES


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "sae", help="sparse autoencoders: train one offline on text, show its features"
    )
    actions = parser.add_subparsers(
        dest="action", metavar="train|show", required=True, parser_class=Parser
    )
    train = actions.add_parser(
        "train", help="train a TopK SAE (SAELens) on one layer's activations, then measure it"
    )
    add_model_option(train)
    train.add_argument("--layer", type=non_negative_int, required=True)
    train.add_argument("--site", choices=SAE_SITES, default="resid_post")
    train.add_argument(
        "--expansion", type=positive_int, default=8, help="latents per d_model (default 8)"
    )
    train.add_argument(
        "--k", type=positive_int, default=32, help="latents active per token (default 32)"
    )
    train.add_argument(
        "--tokens", type=positive_int, help="training tokens (default: all the corpus holds)"
    )
    train.add_argument("--epochs", type=positive_int, default=3, help="passes (default 3)")
    add_corpus_options(train)
    train.add_argument("--seed", type=seed, default=0)
    add_out_option(train, "directory of the SAE")
    train.set_defaults(run=run_train)
    show = actions.add_parser(
        "show", help="feature dashboards of an SAE made by `mechlab sae train --out DIR`"
    )
    show.add_argument("directory", help="the SAE's directory")
    show.add_argument(
        "--model",
        metavar="SPEC",
        type=model_spec,
        help="the model the SAE was trained on, if it moved (default: the spec it holds)",
    )
    add_corpus_options(show, default=None)
    show.add_argument(
        "--feature", type=non_negative_int, action="append", help="a latent's page, repeatable"
    )
    show.add_argument(
        "--top",
        type=positive_int,
        default=50,
        help="without --feature: pages for this many latents, densest first (default 50)",
    )
    show.add_argument(
        "--tokens",
        type=positive_int,
        help=f"held-out tokens to look for activations in (default {NEURON_TOKENS}, or all there "
        "are)",
    )
    add_out_option(show, "directory of the pages")
    show.set_defaults(run=run_show)


def run_train(args: argparse.Namespace) -> int:
    from mechlab.present.features import SAE_FILES

    float32_only(args, "an SAE")
    check_layers_before_loading(args.model, [args.layer])
    check_targets(args.out, SAE_FILES)
    from mechlab.io import exclusive_run, output_writes

    with exclusive_run(args.out), output_writes(args.out):  # a checkpoint on Ctrl-C: one run at
        return train(args)  # a time, and a full disk is one line


def train(args: argparse.Namespace) -> int:
    from mechlab.analysis.sae import check_arguments, remove_checkpoint, train_sae
    from mechlab.present.features import sae_files, sae_table

    text = corpus(args, tokens=args.tokens)
    model = load(args)
    check_arguments(model, args.layer, args.site, args.expansion, args.k)
    sae = train_sae(
        model,
        text.train,
        layer=args.layer,
        site=args.site,
        expansion=args.expansion,
        k=args.k,
        tokens=args.tokens,
        seed=args.seed,
        held_out=text.held_out,
        epochs=args.epochs,
        progress=True,
        checkpoint=args.out,
        corpus=text.manifest(),
    )
    if sae.manifest["interrupted"]:
        warn(
            f"mechlab sae train: interrupted; the checkpoint in {args.out} continues with the "
            "same command"
        )
        return 130
    console().print(sae_table(sae))
    write(args.out, sae_files(sae))
    remove_checkpoint(args.out)
    say(f"wrote {args.out}; its features: mechlab sae show {args.out} --out PAGES")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from mechlab.analysis.sae import check_features, read_manifest

    manifest = read_manifest(args.directory)
    check_features(manifest, args.feature or [])
    from mechlab.present.features import dashboard_file_names

    check_targets(args.out, dashboard_file_names(args.feature or []))
    from mechlab.analysis.sae import SAE, feature_dashboards
    from mechlab.analysis.tokens import token_strings
    from mechlab.present.features import dashboard_files

    trained_on = (manifest.get("corpus") or {}).get("spec", "wikipedia")
    text = corpus(args, tokens=args.tokens or NEURON_TOKENS, spec=args.corpus or trained_on)
    model = load(args, args.model or str(manifest.get("spec") or manifest.get("model")))
    sae = SAE.load(args.directory, model)
    texts = text.paragraphs(held_out=True)
    asked = {"tokens": args.tokens} if args.tokens else {}  # else the library's default
    dashboards = feature_dashboards(
        model, sae, texts, features=args.feature, top=args.top, progress=True, **asked
    )
    files = dashboard_files(dashboards, args.directory, lambda ids: token_strings(model, ids))
    write(args.out, files)
    say(f"wrote {Path(args.out) / 'index.html'} and {len(dashboards.chosen)} feature pages")
    return 0

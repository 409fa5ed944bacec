"""`mechlab tune-lens`: train a tuned lens (one affine translator per layer) on real English, or
evaluate a saved one."""

import argparse

from mechlab.cli.arguments import (
    add_corpus_options,
    add_model_option,
    add_out_option,
    positive_int,
    seed,
    whole_number,
)
from mechlab.cli.common import (
    Subcommands,
    check_targets,
    corpus,
    float32_only,
    load,
    say,
    warn,
    write,
)
from mechlab.defaults import TUNED_LENS_TOKENS


def lens_tokens(text: str) -> int:
    # one training step: mechlab.analysis.tuned_lens.BATCH * SEQ_LEN
    return whole_number(text, 1024)


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "tune-lens", help="train a tuned lens (one affine translator per layer) on real English"
    )
    add_model_option(parser)
    parser.add_argument(
        "--tokens",
        type=lens_tokens,
        default=TUNED_LENS_TOKENS,
        help=f"training tokens (default {TUNED_LENS_TOKENS})",
    )
    add_corpus_options(parser)
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument(
        "--eval-only",
        action="store_true",
        help="evaluate the lens saved in --out instead of training one",
    )
    parser.add_argument(
        "--eval-tokens", type=positive_int, default=4096, help="held-out tokens to evaluate on"
    )
    add_out_option(parser, "directory of the lens and its evaluation")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mechlab.present.lens import tuned_lens_file_names

    float32_only(args, "the tuned lens")
    check_targets(args.out, tuned_lens_file_names(trained=not args.eval_only))
    from mechlab.io import exclusive_run, output_writes

    with exclusive_run(args.out), output_writes(args.out):  # checkpoints as it trains: one run
        return tune(args)  # at a time, and a full disk is one line


def tune(args: argparse.Namespace) -> int:
    from mechlab.analysis.tuned_lens import (
        Checkpoint,
        TunedLens,
        evaluate,
        evaluation_sequences,
        lens_bytes,
        train_tuned_lens,
    )
    from mechlab.io import check_free_space
    from mechlab.present.lens import tuned_lens_files

    text = corpus(args, tokens=args.tokens + args.eval_tokens)
    model = load(args)
    evaluation_sequences(model, text.held_out, args.eval_tokens)  # refused before any training
    if args.eval_only:
        lens = TunedLens.load(args.out, model)
    else:
        check_free_space(args.out, lens_bytes(model), "the lens and its checkpoint")
        lens = train_tuned_lens(
            model,
            text.train,
            tokens=args.tokens,
            seed=args.seed,
            progress=True,
            corpus=text.manifest(),
            checkpoint=args.out,
            repeat=False,
            announce=lambda plan: say(
                f"mechlab tune-lens: {plan}, then an evaluation on {args.eval_tokens:,} held-out "
                f"tokens; Ctrl-C keeps a checkpoint in {args.out}"
            ),
        )
        if lens.manifest["interrupted"]:
            warn(
                f"mechlab tune-lens: interrupted after step {lens.manifest['steps']} of "
                f"{lens.manifest['planned_steps']}; the same command continues from the "
                f"checkpoint in {args.out}"
            )
            return 130
    evaluation = evaluate(model, lens, text.held_out, tokens=args.eval_tokens, progress=True)
    lens.manifest["held_out_kl"] = {"logit": evaluation.logit_kl, "tuned": evaluation.tuned_kl}
    say(repr(evaluation))
    write(args.out, tuned_lens_files(evaluation))
    if not args.eval_only:
        lens.save(args.out)
        Checkpoint.remove(args.out)
    say(f"wrote {args.out}")
    return 0

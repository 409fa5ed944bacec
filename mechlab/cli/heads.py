"""`mechlab heads`: score every head (induction, previous-token, ...) of one model or several,
locally or one Ray task per model; optionally ablate the induction heads."""

import argparse

from mechlab.cli.arguments import (
    add_model_option,
    add_out_option,
    positive_int,
    seed,
    unit_interval,
)
from mechlab.cli.common import (
    Subcommands,
    check_targets,
    console,
    model_specs,
    placement,
    say,
    warn,
    write,
)
from mechlab.defaults import INDUCTION_THRESHOLD
from mechlab.errors import MechlabError


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "heads", help="score every head (induction, previous-token, ...) on repeated random tokens"
    )
    add_model_option(parser, repeatable=True)
    parser.add_argument(
        "--seq-len",
        type=positive_int,
        default=50,
        help="length of the random sequence r in [BOS] + r + r",
    )
    parser.add_argument("--batch", type=positive_int, default=10, help="number of random sequences")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument(
        "--threshold",
        type=unit_interval,
        default=INDUCTION_THRESHOLD,
        help="induction score that counts as an induction head",
    )
    parser.add_argument(
        "--ablate",
        type=positive_int,
        metavar="K",
        help="then ablate the top-K induction heads one by one and together, and K non-induction "
        "heads of the same layers as a control (ablation.png, heads.json 'ablation')",
    )
    parser.add_argument(
        "--ablate-method",
        choices=["zero", "mean", "resample"],
        default="mean",
        help="what an ablated head outputs: zero, its mean over the batch and positions, or its "
        "output on another sequence (default mean)",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="one Ray task per model: on a local Ray instance started for this command, or on the "
        "cluster at ADDRESS (HOST:PORT); needs pip install 'mechlab[ray]'",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="with --ray: show Ray's own log lines on stderr"
    )
    add_out_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mechlab.present.heads import scan_file_names

    specs = model_specs(args)
    check_targets(args.out, scan_file_names(specs, ablation=bool(args.ablate)))
    from mechlab.present.heads import ablation_table, heads_table, scan_files
    from mechlab.workflows.distributed import scan_model, scan_models_on_ray

    options = dict(
        seq_len=args.seq_len,
        batch=args.batch,
        seed=args.seed,
        threshold=args.threshold,
        ablate=args.ablate or 0,
        ablate_method=args.ablate_method,
        **placement(args),
    )
    failures: dict[str, str] = {}
    if args.ray is None:
        results = [scan_model(spec, progress=True, **options) for spec in specs]
    else:
        say(f"scanning {len(specs)} models on Ray ({args.ray or 'a local instance'})")
        results, failures = scan_models_on_ray(
            specs, address=args.ray or None, verbose=args.verbose, **options
        )
        if not results:
            raise MechlabError(
                "every model failed on its worker: "
                + "; ".join(f"{spec}: {why}" for spec, why in failures.items())
            )
    for result in results:
        console().print(heads_table(result.scan, args.threshold))
        if result.study is not None:
            console().print(ablation_table(result.study))
    write(args.out, scan_files(results, several=len(specs) > 1))
    for spec, why in failures.items():
        warn(f"mechlab heads: {spec} failed on its worker: {why}")
    say(f"wrote {args.out}" + (f" without {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0

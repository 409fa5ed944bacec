"""The `mechlab` command: one subcommand per capability. It parses arguments, calls the library,
and writes files; errors become one line on stderr and exit status 2.

Only the standard library and mechlab's light modules are imported before the arguments are
checked: `mechlab --help` and every argument error answer at once, and torch, TransformerLens and
matplotlib are imported by the subcommand that runs.
"""

import argparse
import contextlib
import re
import signal
import sys
import threading
import warnings
from collections.abc import Iterator

from mechlab.checks import check_seed, is_prime
from mechlab.defaults import (
    ATTRIBUTION_MAX_BUDGET,
    ATTRIBUTION_MAX_STEPS,
    ATTRIBUTION_METHODS,
    ATTRIBUTION_STEP_BUDGET,
    DEFAULT_MODEL,
    DEVICES,
    DTYPES,
    GROKKING_FRACTION,
    GROKKING_P,
    GROKKING_STEPS,
    INDUCTION_THRESHOLD,
    MAX_GROKKING_P,
    MAX_PROMPTS,
    MAX_PROMPTS_FILE_BYTES,
    NEURON_TOKENS,
    SAE_SITES,
    TUNED_LENS_TOKENS,
)
from mechlab.errors import InputError, MechlabError, MechlabWarning
from mechlab.labels import parse_heads
from mechlab.terminal import one_line, visible


class UsageError(Exception):
    """An argument error found by argparse, reported as one line like every other error."""


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line ("mechlab lens: error: ... (see mechlab lens --help)")
    instead of a usage dump, and it is raised instead of exiting, so `main` returns 2."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(one_line(str(error)), file=sys.stderr)
        return 2
    except SystemExit as exit:  # --help and --version exit through argparse
        return int(exit.code or 0)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    # what messages name: the command and its action ("mechlab sae train: error: ...")
    command = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
    with terminate_as_interrupt():
        return run_command(args, command)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's stop, `kill`) takes Ctrl-C's clean way out: checkpoints saved, an
    empty output directory removed, no partial file. Only in the main thread, where Python
    delivers signals; the previous handler is put back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(args: argparse.Namespace, command: str) -> int:
    try:
        with warnings.catch_warnings():
            # mechlab's own caveats, one line each; other libraries' warnings (matplotlib's
            # missing glyphs, ...) are not the user's business
            warnings.simplefilter("ignore")
            warnings.simplefilter("always", MechlabWarning)
            warnings.showwarning = lambda message, *_: warn(
                f"mechlab {command}: warning: {message}"
            )
            return args.run(args) or 0
    except MechlabError as error:
        print(f"mechlab {command}: error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mechlab {command}: interrupted; no files were written", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------------------------------
# Argument types: checked while parsing, before anything is loaded


def whole_number(text: str, minimum: int) -> int:
    shown = repr(text) if len(text) <= 40 else f"a text of {len(text):,} characters"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {shown}") from None
    if value < minimum:
        shown = str(value) if len(text) <= 40 else f"a number of {len(text.strip()):,} digits"
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {shown}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, 1)


def lens_tokens(text: str) -> int:
    # one training step: mechlab.analysis.tuned_lens.BATCH * SEQ_LEN
    return whole_number(text, 1024)


def non_negative_int(text: str) -> int:
    return whole_number(text, 0)


def count_up_to(maximum: int, default: int):
    """An argument type: a whole number from 1 to `maximum` (the message names the default)."""

    def count(text: str) -> int:
        value = whole_number(text, 1)
        if value > maximum:
            raise argparse.ArgumentTypeError(
                f"must be at most {maximum}, got {value} ({default} is the default)"
            )
        return value

    return count


attribution_steps = count_up_to(ATTRIBUTION_MAX_STEPS, 64)
attribution_budget = count_up_to(ATTRIBUTION_MAX_BUDGET, ATTRIBUTION_STEP_BUDGET)


def token_or_id(text: str) -> str | int:
    """A one-token answer or target: text as typed, or ``id:N`` for token id N (digits alone are
    text: ' 5' and '5' are tokens of their own)."""
    match = re.fullmatch(r"id:(\d+)", text.strip())
    if match and len(match[1]) > 9:  # no vocabulary holds a billion tokens
        raise argparse.ArgumentTypeError(
            f"token id {match[1][:20]}{'...' if len(match[1]) > 20 else ''} is larger than any "
            "vocabulary: give an id the model has, e.g. id:42"
        )
    return int(match[1]) if match else text


def prime(text: str) -> int:
    """A prime modulus, at most MAX_GROKKING_P (train_grokking then checks that its run fits)."""
    value = whole_number(text, 3)
    if value > MAX_GROKKING_P:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_GROKKING_P:,} (the run's memory grows as p^3), got a number of "
            f"{len(text.strip())} digits (e.g. 113, 97, 53)"
        )
    if not is_prime(value):
        raise argparse.ArgumentTypeError(f"must be a prime, got {value} (e.g. 113, 97, 53)")
    return value


def seed(text: str) -> int:
    value = whole_number(text, 0)
    try:
        return check_seed(value)
    except InputError:
        raise argparse.ArgumentTypeError(
            f"must be at most 2**63 - 1, got a number of {len(text.strip())} digits (e.g. 0)"
        ) from None


def open_unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {value}")
    return value


def non_empty(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value}")
    return value


def model_spec(text: str) -> str:
    """The checks a spec can get without loading anything; load_model does the rest."""
    from mechlab.defaults import parse_random_spec

    if not text.strip():
        raise argparse.ArgumentTypeError("the model spec is empty: e.g. --model smollm2-135m")
    if text.startswith("random:"):
        try:
            parse_random_spec(text.strip())
        except MechlabError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return text.strip()


def heads_list(text: str) -> list[tuple[int, int]]:
    """'5.1,5.5' -> [(5, 1), (5, 5)] (mechlab.labels.parse_heads), as an argparse type."""
    try:
        return parse_heads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_model_option(parser: argparse.ArgumentParser, *, repeatable: bool = False) -> None:
    """--model (one, or repeatable) and where it runs: --device and --dtype."""
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where the model runs (default auto: cuda when torch sees a GPU, else cpu)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="the model's precision (default float32; scores, losses and the lens's statistics "
        "are accumulated in float32 whatever it is)",
    )
    if repeatable:
        parser.add_argument(
            "--model",
            action="append",
            metavar="SPEC",
            type=model_spec,
            help=f"model spec, repeatable (default {DEFAULT_MODEL})",
        )
    else:
        parser.add_argument(
            "--model",
            default=DEFAULT_MODEL,
            metavar="SPEC",
            type=model_spec,
            help=f"model spec (default {DEFAULT_MODEL})",
        )


def build_parser() -> Parser:
    parser = Parser(prog="mechlab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    models = commands.add_parser(
        "models", help="list model specs and whether each loads offline now"
    )
    models.set_defaults(run=run_models)

    predict = commands.add_parser("predict", help="print a model's top next tokens for a prompt")
    add_model_option(predict)
    predict.add_argument("--prompt", default="The capital of France is")
    predict.add_argument("--top-k", type=positive_int, default=10)
    predict.set_defaults(run=run_predict)

    verify = commands.add_parser(
        "verify",
        help="check the from-scratch Transformer against the library (and against Hugging Face "
        "transformers where the model has a local checkpoint), component by component",
    )
    add_model_option(verify)
    verify.add_argument(
        "--prompt", default="The capital of France is", help="text to run both models on"
    )
    verify.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    verify.set_defaults(run=run_verify)

    attention = commands.add_parser(
        "attention", help="attention patterns as an offline HTML page and PNGs"
    )
    add_model_option(attention)
    attention.add_argument("--prompt", required=True)
    attention.add_argument(
        "--layer",
        type=non_negative_int,
        nargs="+",
        action="extend",
        metavar="L",
        help="layers to show, every head (default: every layer, unless --heads)",
    )
    attention.add_argument(
        "--heads", metavar="L.H,...", type=heads_list, help="single heads to show, e.g. 5.1,5.5"
    )
    attention.add_argument("--out", required=True, help="output directory")
    attention.set_defaults(run=run_attention)

    heads = commands.add_parser(
        "heads", help="score every head (induction, previous-token, ...) on repeated random tokens"
    )
    add_model_option(heads, repeatable=True)
    heads.add_argument(
        "--seq-len",
        type=positive_int,
        default=50,
        help="length of the random sequence r in [BOS] + r + r",
    )
    heads.add_argument("--batch", type=positive_int, default=10, help="number of random sequences")
    heads.add_argument("--seed", type=seed, default=0)
    heads.add_argument(
        "--threshold",
        type=unit_interval,
        default=INDUCTION_THRESHOLD,
        help="induction score that counts as an induction head",
    )
    heads.add_argument(
        "--ablate",
        type=positive_int,
        metavar="K",
        help="then ablate the top-K induction heads one by one and together, and K non-induction "
        "heads of the same layers as a control (ablation.png, heads.json 'ablation')",
    )
    heads.add_argument(
        "--ablate-method",
        choices=["zero", "mean", "resample"],
        default="mean",
        help="what an ablated head outputs: zero, its mean over the batch and positions, or its "
        "output on another sequence (default mean)",
    )
    heads.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="one Ray task per model: on a local Ray instance started for this command, or on the "
        "cluster at ADDRESS (HOST:PORT); needs pip install 'mechlab[ray]'",
    )
    heads.add_argument(
        "--verbose", action="store_true", help="with --ray: show Ray's own log lines on stderr"
    )
    heads.add_argument("--out", required=True, help="output directory")
    heads.set_defaults(run=run_heads)

    patch = commands.add_parser(
        "patch",
        help="activation patching: which heads or positions carry the answer from a clean prompt",
    )
    add_model_option(patch)
    patch.add_argument("--clean", required=True, help="the prompt whose answer is restored")
    patch.add_argument(
        "--corrupted", required=True, help="the same number of tokens, with the answer changed"
    )
    patch.add_argument(
        "--answer",
        type=token_or_id,
        required=True,
        help="the clean answer, one token, e.g. ' Mary', or id:N",
    )
    patch.add_argument(
        "--wrong", type=token_or_id, required=True, help="the corrupted answer, one token"
    )
    patch.add_argument(
        "--over",
        choices=["heads", "resid", "layers"],
        default="heads",
        help="each head's output (per query head), the residual stream at each layer and "
        "position, or each attention and MLP output at each position (default heads)",
    )
    patch.add_argument(
        "--method",
        choices=["exact", "attribution"],
        default="exact",
        help="one patched run per cell, or the first-order estimate from one backward pass",
    )
    patch.add_argument("--out", required=True, help="output directory")
    patch.set_defaults(run=run_patch)

    train = commands.add_parser(
        "train-induction",
        help="train attention-only models from scratch and watch induction heads form",
    )
    train.add_argument("--layers", type=positive_int, default=2, help="layers (default 2)")
    train.add_argument("--heads", type=positive_int, default=8, help="heads per layer (default 8)")
    train.add_argument(
        "--steps", type=positive_int, default=1000, help="training steps per model (default 1000)"
    )
    train.add_argument("--seed", type=seed, default=0)
    train.add_argument(
        "--eval-every", type=positive_int, default=25, help="steps between checkpoints"
    )
    train.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where to train (default auto: cuda when torch sees a GPU, else cpu; float32)",
    )
    train.add_argument("--out", required=True, help="output directory")
    train.set_defaults(run=run_train_induction)

    grok = commands.add_parser(
        "train-grokking",
        help="train a one-layer Transformer on (a + b) mod p and watch it memorise, then "
        "generalise; Fourier analysis and progress measures",
    )
    grok.add_argument(
        "--p", type=prime, default=GROKKING_P, help=f"the prime modulus (default {GROKKING_P})"
    )
    grok.add_argument(
        "--fraction",
        type=open_unit_interval,
        help=f"share of the p^2 pairs trained on (default {GROKKING_FRACTION})",
    )
    grok.add_argument(
        "--steps", type=positive_int, help=f"full-batch training steps (default {GROKKING_STEPS})"
    )
    grok.add_argument("--seed", type=seed, default=0)
    grok.add_argument("--out", required=True, help="output directory")
    grok.set_defaults(run=run_train_grokking)

    dla = commands.add_parser(
        "dla", help="direct logit attribution: what each head and MLP writes into the answer"
    )
    add_model_option(dla)
    dla.add_argument("--prompt", required=True)
    dla.add_argument(
        "--answer",
        type=token_or_id,
        required=True,
        help="one token, e.g. ' Paris', or id:N for token id N",
    )
    dla.add_argument(
        "--wrong", type=token_or_id, help="one token: attribute logit(answer) - logit(wrong)"
    )
    dla.add_argument("--out", required=True, help="output directory")
    dla.set_defaults(run=run_dla)

    attribute = commands.add_parser(
        "attribute", help="token attribution: which tokens of the prompt drive the answer"
    )
    add_model_option(attribute)
    attribute.add_argument("--prompt", required=True)
    attribute.add_argument(
        "--answer",
        type=token_or_id,
        required=True,
        help="one token, e.g. ' Paris', or id:N for token id N",
    )
    attribute.add_argument(
        "--wrong", type=token_or_id, help="one token: attribute logit(answer) - logit(wrong)"
    )
    attribute.add_argument(
        "--method",
        action="append",
        choices=ATTRIBUTION_METHODS,
        help="repeatable (default: every method)",
    )
    attribute.add_argument(
        "--steps",
        type=attribution_steps,
        default=64,
        help="integrated gradients' first quadrature nodes (default 64)",
    )
    attribute.add_argument(
        "--max-steps",
        type=attribution_budget,
        default=ATTRIBUTION_STEP_BUDGET,
        help="the most nodes integrated gradients may add until the scores are complete "
        f"(default {ATTRIBUTION_STEP_BUDGET})",
    )
    attribute.add_argument(
        "--baseline",
        type=non_empty,
        default="zero",
        help="what a removed token becomes: zero, pad, bos or one token (default zero)",
    )
    attribute.add_argument(
        "--layer",
        type=non_negative_int,
        help="layer_gradient_x_activation: the block whose input is weighted (default: middle)",
    )
    attribute.add_argument(
        "--sanity",
        action="store_true",
        help="also run the model-parameter randomization check per method (randomization.png)",
    )
    attribute.add_argument("--out", required=True, help="output directory")
    attribute.set_defaults(run=run_attribute)

    circuits = commands.add_parser(
        "circuits",
        help="QK and OV circuits from the weights alone: composition scores between heads, "
        "copying, against a random baseline (no forward pass)",
    )
    add_model_option(circuits)
    circuits.add_argument(
        "--top", type=positive_int, default=10, help="strongest compositions to list (default 10)"
    )
    circuits.add_argument("--out", required=True, help="output directory")
    circuits.set_defaults(run=run_circuits)

    neurons = commands.add_parser(
        "neurons",
        help="what MLP neurons respond to: their top and bottom activations over Wikipedia "
        "text (then `mechlab neurons show DIR` for a neuron's page)",
    )
    add_model_option(neurons)
    neurons.add_argument(
        "--layer",
        type=non_negative_int,
        action="append",
        help="a layer to record, repeatable (default: every layer)",
    )
    neurons.add_argument(
        "--tokens",
        type=positive_int,
        help=f"tokens of text to go through (default {NEURON_TOKENS}, or all there are)",
    )
    neurons.add_argument("--out", help="output directory (neurons.safetensors, neurons.json)")
    neurons.set_defaults(run=run_neurons)
    neuron_actions = neurons.add_subparsers(dest="action", metavar="show", parser_class=Parser)
    neurons_show = neuron_actions.add_parser(
        "show", help="a neuron's page from records made by `mechlab neurons --out DIR`"
    )
    neurons_show.add_argument("directory", help="the records' directory")
    neurons_show.add_argument(
        "--model",
        metavar="SPEC",
        type=model_spec,
        help="the model the records were made with, if it moved (default: the spec they hold)",
    )
    neurons_show.add_argument("--layer", type=non_negative_int, required=True)
    neurons_show.add_argument(
        "--neuron", type=non_negative_int, action="append", required=True, help="repeatable"
    )
    neurons_show.add_argument(
        "--out",
        required=True,
        help="PAGE.html for one neuron, or a directory for one page per neuron",
    )
    neurons_show.set_defaults(run=run_neurons_show)

    sae = commands.add_parser(
        "sae", help="sparse autoencoders: train one offline on Wikipedia text, show its features"
    )
    sae_actions = sae.add_subparsers(
        dest="action", metavar="train|show", required=True, parser_class=Parser
    )
    sae_train = sae_actions.add_parser(
        "train", help="train a TopK SAE (SAELens) on one layer's activations, then measure it"
    )
    add_model_option(sae_train)
    sae_train.add_argument("--layer", type=non_negative_int, required=True)
    sae_train.add_argument("--site", choices=SAE_SITES, default="resid_post")
    sae_train.add_argument(
        "--expansion", type=positive_int, default=8, help="latents per d_model (default 8)"
    )
    sae_train.add_argument(
        "--k", type=positive_int, default=32, help="latents active per token (default 32)"
    )
    sae_train.add_argument(
        "--tokens", type=positive_int, help="training tokens (default: all the corpus holds)"
    )
    sae_train.add_argument("--epochs", type=positive_int, default=3, help="passes (default 3)")
    sae_train.add_argument("--seed", type=seed, default=0)
    sae_train.add_argument("--out", required=True, help="directory of the SAE")
    sae_train.set_defaults(run=run_sae_train)
    sae_show = sae_actions.add_parser(
        "show", help="feature dashboards of an SAE made by `mechlab sae train --out DIR`"
    )
    sae_show.add_argument("directory", help="the SAE's directory")
    sae_show.add_argument(
        "--model",
        metavar="SPEC",
        type=model_spec,
        help="the model the SAE was trained on, if it moved (default: the spec it holds)",
    )
    sae_show.add_argument(
        "--feature", type=non_negative_int, action="append", help="a latent's page, repeatable"
    )
    sae_show.add_argument(
        "--top",
        type=positive_int,
        default=50,
        help="without --feature: pages for this many latents, densest first (default 50)",
    )
    sae_show.add_argument(
        "--tokens",
        type=positive_int,
        help=f"held-out tokens to look for activations in (default {NEURON_TOKENS}, or all there "
        "are)",
    )
    sae_show.add_argument("--out", required=True, help="directory of the pages")
    sae_show.set_defaults(run=run_sae_show)

    lens = commands.add_parser("lens", help="logit lens: decode every layer's residual stream")
    add_model_option(lens)
    source = lens.add_mutually_exclusive_group(required=True)
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
    lens.add_argument(
        "--target",
        type=token_or_id,
        help="a single token to follow through the layers, e.g. ' Paris', or id:N",
    )
    lens.add_argument("--top-k", type=positive_int, default=5)
    lens.add_argument(
        "--include-mid", action="store_true", help="also decode between attention and MLP"
    )
    lens.add_argument(
        "--tuned",
        metavar="DIR|auto",
        help="decode through a tuned lens: one saved by `mechlab tune-lens --out DIR`, or 'auto' "
        "for the one cached for this model",
    )
    lens.add_argument(
        "--train-if-missing",
        action="store_true",
        help="with --tuned auto: train and cache the lens if there is none (minutes)",
    )
    lens.add_argument("--out", required=True, help="output directory")
    lens.set_defaults(run=run_lens)

    tune = commands.add_parser(
        "tune-lens", help="train a tuned lens (one affine translator per layer) on real English"
    )
    add_model_option(tune)
    tune.add_argument(
        "--tokens",
        type=lens_tokens,
        default=TUNED_LENS_TOKENS,
        help=f"training tokens (default {TUNED_LENS_TOKENS})",
    )
    tune.add_argument("--corpus", default="wikipedia", help="training text (default wikipedia)")
    tune.add_argument("--seed", type=seed, default=0)
    tune.add_argument(
        "--eval-only",
        action="store_true",
        help="evaluate the lens saved in --out instead of training one",
    )
    tune.add_argument(
        "--eval-tokens", type=positive_int, default=4096, help="held-out tokens to evaluate on"
    )
    tune.add_argument("--out", required=True, help="directory of the lens and its evaluation")
    tune.set_defaults(run=run_tune_lens)

    report = commands.add_parser(
        "report", help="parity, logit lens, head scan and attention views on one offline page"
    )
    add_model_option(report, repeatable=True)
    report.add_argument(
        "--seq-len", type=positive_int, default=50, help="head scan: length of r in [BOS] + r + r"
    )
    report.add_argument(
        "--batch", type=positive_int, default=10, help="head scan: number of sequences"
    )
    report.add_argument("--out", required=True, help="output directory")
    report.set_defaults(run=run_report)
    return parser


# --------------------------------------------------------------------------------------------------
# Shared steps


def float32_only(args: argparse.Namespace, what: str) -> None:
    if args.dtype != "float32":
        raise InputError(
            f"{what} is trained on, and tied by hash to, the float32 weights: drop --dtype "
            f"{args.dtype} (or use --dtype float32)."
        )


def check_layers_before_loading(spec: str, layers: list[int]) -> None:
    """Refuse a layer out of range before the model loads, where its shape is known without loading
    it (defaults.known_n_layers); the library checks every other model once it is loaded."""
    from mechlab.defaults import known_n_layers

    n_layers = known_n_layers(spec)
    for layer in layers:
        if n_layers is not None and not 0 <= layer < n_layers:
            raise InputError(
                f"layer {layer} is out of range: {spec} has layers 0 .. {n_layers - 1}"
            )


def placement(args: argparse.Namespace) -> dict:
    """load_model's device and dtype from --device and --dtype."""
    return dict(device=args.device, dtype=args.dtype)


def model_specs(args: argparse.Namespace) -> list[str]:
    from mechlab.io import model_slug

    specs = args.model or [DEFAULT_MODEL]
    if len(set(map(model_slug, specs))) != len(specs):
        raise InputError(f"the same model is given twice: {specs}")
    return specs


def console():
    from rich.console import Console

    return Console()


def say(text: str) -> None:
    """Print plain text through rich without reading it as markup (paths and names may hold '['),
    control characters shown escaped."""
    console().print(visible(text), markup=False, highlight=False)


def warn(text: str) -> None:
    """One line on stderr, control characters shown escaped."""
    print(one_line(text), file=sys.stderr)


def read_prompts(path: str) -> list[str]:
    """One prompt per '\\n'-terminated line (a trailing '\\r' is dropped; U+2028, form feeds and the
    like stay inside their prompt), blank lines skipped; at most MAX_PROMPTS_FILE_BYTES are read."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PROMPTS_FILE_BYTES + 1)
    except OSError as error:
        raise InputError(f"cannot read prompts file {path!r}: {error.strerror or error}") from None
    if len(data) > MAX_PROMPTS_FILE_BYTES:
        raise InputError(
            f"prompts file {path!r} is larger than {MAX_PROMPTS_FILE_BYTES >> 20} MiB: "
            "split it into smaller files"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"prompts file {path!r} is not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    prompts = [line.removesuffix("\r") for line in text.split("\n")]
    prompts = [prompt for prompt in prompts if prompt.strip()]
    if not prompts:
        raise InputError(f"no prompts in {path!r}: write one prompt per line")
    if len(prompts) > MAX_PROMPTS:
        raise InputError(
            f"prompts file {path!r} has {len(prompts):,} prompts, more than "
            f"{MAX_PROMPTS:,}: split it into smaller files"
        )
    return prompts


# --------------------------------------------------------------------------------------------------
# Subcommands


def run_report(args: argparse.Namespace) -> int:
    from mechlab.io import check_output_targets

    specs = model_specs(args)
    check_output_targets(args.out, ["report.html", "report.json"])
    from mechlab.workflows.report import write_report

    page = write_report(specs, args.out, seq_len=args.seq_len, batch=args.batch, **placement(args))
    say(f"wrote {page}")
    return 0


def run_lens(args: argparse.Namespace) -> int:
    import time

    from mechlab.io import check_output_targets

    prompts = read_prompts(args.prompts_file) if args.prompts_file else [args.prompt]
    if args.train_if_missing and args.tuned != "auto":
        raise InputError(
            "--train-if-missing trains the lens cached for the model: use it with --tuned auto "
            "(a --tuned DIR is made with `mechlab tune-lens --out DIR`)"
        )
    if args.tuned:
        float32_only(args, "a tuned lens")
    from mechlab.present.artifacts import lens_file_names

    check_output_targets(args.out, lens_file_names(curves=len(prompts) > 1))
    from mechlab.analysis.lens import lens_curves, logit_lens
    from mechlab.io import write_files
    from mechlab.models.loading import load_model
    from mechlab.present.artifacts import lens_files
    from mechlab.present.text import lens_table
    from mechlab.progress import progress_bar

    model = load_model(args.model, **placement(args))
    options = dict(target=args.target, top_k=args.top_k, include_mid=args.include_mid)
    if args.tuned:
        options["lens"] = tuned_lens_for(model, args.tuned, train=args.train_if_missing)
    start = time.perf_counter()
    first = logit_lens(model, prompts[0], **options)
    curves = None
    if len(prompts) > 1:
        seconds = time.perf_counter() - start
        warn(
            f"mechlab lens: {len(prompts):,} prompts; the first took {seconds:.2f} s, so about "
            f"{seconds * len(prompts) / 60:.1f} min in all (Ctrl-C stops without writing)"
        )

        def results():  # one at a time: only the curves' running sums are kept
            yield first
            for prompt in progress_bar(prompts[1:], desc="logit lens", leave=False):
                yield logit_lens(model, prompt, **options)

        curves = lens_curves(results())
    console().print(lens_table(first))
    files = lens_files(first, curves, prompts if curves is not None else None)
    write_files(args.out, files)
    say(f"wrote {args.out}")
    return 0


def tuned_lens_for(model, where: str, *, train: bool):
    """The tuned lens saved in `where`, or with 'auto' the one cached for the model (trained and
    cached first when `train`)."""
    from mechlab.analysis.tuned_lens import TunedLens, cached_lens_directory, train_default_lens

    if where != "auto":
        return TunedLens.load(where, model)
    directory = cached_lens_directory(model)
    if not (directory / "manifest.json").exists():
        if not train:
            raise InputError(
                f"no tuned lens cached for {model.cfg.model_name}: add --train-if-missing to "
                f"train one (minutes), or train it with `mechlab tune-lens --model "
                f"{model.cfg.model_name} --out DIR` and pass --tuned DIR"
            )
        train_default_lens(model, directory, progress=True)
    return TunedLens.load(directory, model)


def run_tune_lens(args: argparse.Namespace) -> int:
    from mechlab.defaults import TUNED_LENS_CHECKPOINT_FILES, TUNED_LENS_FILES
    from mechlab.io import check_output_targets

    float32_only(args, "the tuned lens")
    outputs = ["eval.json", "tuned_vs_logit.png"]
    if not args.eval_only:  # the lens, and the checkpoint written as it trains
        outputs += [*TUNED_LENS_FILES, *TUNED_LENS_CHECKPOINT_FILES]
    check_output_targets(args.out, outputs)
    from mechlab.io import exclusive_run, output_writes

    with exclusive_run(args.out), output_writes(args.out):  # checkpoints as it trains: one run
        return tune_lens(args)  # at a time, and a full disk is one line


def tune_lens(args: argparse.Namespace) -> int:
    from mechlab.analysis.tuned_lens import (
        Checkpoint,
        TunedLens,
        evaluate,
        evaluation_sequences,
        train_tuned_lens,
    )
    from mechlab.corpus import load_corpus
    from mechlab.io import write_files
    from mechlab.models.loading import load_model
    from mechlab.present.artifacts import tuned_lens_files

    corpus = load_corpus(args.corpus)
    model = load_model(args.model, **placement(args))
    evaluation_sequences(model, corpus.held_out, args.eval_tokens)  # refused before any training
    if not args.eval_only:
        from mechlab.analysis.tuned_lens import lens_bytes
        from mechlab.io import check_free_space

        check_free_space(args.out, lens_bytes(model), "the lens and its checkpoint")
    if args.eval_only:
        lens = TunedLens.load(args.out, model)
    else:
        lens = train_tuned_lens(
            model,
            corpus.train,
            tokens=args.tokens,
            seed=args.seed,
            progress=True,
            corpus=corpus.manifest(),
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
    evaluation = evaluate(model, lens, corpus.held_out, tokens=args.eval_tokens, progress=True)
    lens.manifest["held_out_kl"] = {"logit": evaluation.logit_kl, "tuned": evaluation.tuned_kl}
    say(repr(evaluation))
    write_files(args.out, tuned_lens_files(evaluation))
    if not args.eval_only:
        lens.save(args.out)
        Checkpoint.remove(args.out)
    say(f"wrote {args.out}")
    return 0


def run_heads(args: argparse.Namespace) -> int:
    from mechlab.io import check_output_targets, model_slug

    specs = model_specs(args)
    several = len(specs) > 1
    from mechlab.present.artifacts import heads_file_names

    own = heads_file_names(ablation=bool(args.ablate))
    names = [f"{model_slug(spec)}/{name}" if several else name for spec in specs for name in own]
    check_output_targets(args.out, names + (["induction_mosaic.png"] if several else []))
    from mechlab.io import write_files
    from mechlab.present.artifacts import model_files, mosaic_png
    from mechlab.present.text import ablation_table, heads_table
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
    files = {}  # everything is computed before anything is written
    for result in results:
        console().print(heads_table(result.scan, args.threshold))
        if result.study is not None:
            console().print(ablation_table(result.study))
        files.update(model_files(result.spec, result.files, several=several))
    if several:
        files["induction_mosaic.png"] = mosaic_png([result.scan for result in results])
    write_files(args.out, files)
    for spec, why in failures.items():
        warn(f"mechlab heads: {spec} failed on its worker: {why}")
    say(f"wrote {args.out}" + (f" without {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


def run_patch(args: argparse.Namespace) -> int:
    from mechlab.io import check_output_targets

    check_output_targets(args.out, ["patch.json", f"patch_{args.over}.png", "patch.html"])
    from mechlab.analysis.patching import patch
    from mechlab.io import write_files
    from mechlab.models.loading import load_model
    from mechlab.present.artifacts import patch_files
    from mechlab.present.text import patch_table

    model = load_model(args.model, **placement(args))
    result = patch(
        model,
        args.clean,
        args.corrupted,
        answer=args.answer,
        wrong=args.wrong,
        over=args.over,
        method=args.method,
        progress=True,
    )
    console().print(patch_table(result))
    write_files(args.out, patch_files(result))
    say(f"wrote {args.out}")
    return 0


def run_train_induction(args: argparse.Namespace) -> int:
    from mechlab.io import check_output_targets

    check_output_targets(args.out, ["formation.json", "formation.png"])
    from mechlab.io import write_files
    from mechlab.present.artifacts import formation_files
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
    write_files(args.out, formation_files(formation))
    say(repr(formation))
    if formation.interrupted:
        warn(f"mechlab train-induction: interrupted; wrote what was recorded to {args.out}")
        return 130
    say(f"wrote {args.out}")
    return 0


def run_train_grokking(args: argparse.Namespace) -> int:
    from mechlab.io import check_output_targets
    from mechlab.present.artifacts import GROKKING_FILES

    check_output_targets(args.out, GROKKING_FILES)
    from mechlab.io import write_files
    from mechlab.present.artifacts import grokking_files
    from mechlab.scratch.grokking import train_grokking

    run = train_grokking(p=args.p, fraction=args.fraction, steps=args.steps, seed=args.seed)
    write_files(args.out, grokking_files(run))
    say(repr(run))
    if run.interrupted:
        warn(f"mechlab train-grokking: interrupted; wrote what was recorded to {args.out}")
        return 130
    say(f"wrote {args.out}")
    return 0


def run_dla(args: argparse.Namespace) -> int:
    from mechlab.io import check_output_targets

    check_output_targets(args.out, ["dla.json", "dla_heads.png", "dla_layers.png", "dla.html"])
    from mechlab.analysis.dla import logit_attribution
    from mechlab.io import write_files
    from mechlab.models.loading import load_model
    from mechlab.present.artifacts import dla_files
    from mechlab.present.text import dla_table

    model = load_model(args.model, **placement(args))
    result = logit_attribution(model, args.prompt, answer=args.answer, wrong=args.wrong)
    console().print(dla_table(result))
    write_files(args.out, dla_files(result))
    say(f"wrote {args.out}")
    return 0


def run_circuits(args: argparse.Namespace) -> int:
    from mechlab.io import check_output_targets
    from mechlab.present.artifacts import CIRCUITS_FILES

    check_output_targets(args.out, CIRCUITS_FILES)
    from mechlab.analysis.circuits import circuits
    from mechlab.io import write_files
    from mechlab.models.loading import load_model
    from mechlab.present.artifacts import circuits_files
    from mechlab.present.text import circuits_table

    model = load_model(args.model, **placement(args))
    result = circuits(model)
    console().print(circuits_table(result, args.top))
    write_files(args.out, circuits_files(result, top=args.top))
    say(f"wrote {args.out}")
    return 0


def corpus_paragraphs(held_out: bool = False) -> tuple[list[str], dict]:
    """The Wikipedia corpus's paragraphs (training or held-out documents), each one text."""
    from mechlab.corpus import load_corpus

    corpus = load_corpus("wikipedia")
    documents = corpus.held_out if held_out else corpus.train
    return [p for document in documents for p in document.split("\n\n")], corpus.manifest()


def run_neurons(args: argparse.Namespace) -> int:
    from mechlab.io import check_output_targets
    from mechlab.present.artifacts import NEURON_FILES

    if args.out is None:
        raise InputError(
            "the following arguments are required: --out (see 'mechlab neurons --help')"
        )
    check_layers_before_loading(args.model, args.layer or [])
    check_output_targets(args.out, NEURON_FILES)
    from mechlab.analysis.neurons import top_activations
    from mechlab.io import write_files
    from mechlab.models.loading import load_model
    from mechlab.present.artifacts import neuron_files

    model = load_model(args.model, **placement(args))
    texts, corpus = corpus_paragraphs()
    records = top_activations(model, texts, layers=args.layer, tokens=args.tokens, progress=True)
    records.corpus = corpus
    write_files(args.out, neuron_files(records))
    say(repr(records))
    say(f"wrote {args.out}; a neuron's page: mechlab neurons show {args.out} --layer L --neuron N")
    return 0


def run_neurons_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mechlab.analysis.neurons import NeuronRecords
    from mechlab.io import check_output_targets

    out = Path(args.out)
    neurons = list(dict.fromkeys(args.neuron))
    single = out.suffix == ".html"
    if single and len(neurons) > 1:
        raise InputError(
            f"--out {args.out!r} is one page, but {len(neurons)} neurons were asked for: give a "
            "directory instead (one page per neuron)"
        )
    names = [out.name] if single else [f"neuron_L{args.layer}N{n}.html" for n in neurons]
    target = out.parent if single else out
    check_output_targets(target, names)
    records = NeuronRecords.load(args.directory)
    records.layer_index(args.layer)
    for neuron in neurons:
        records.check_neuron(neuron)
    from mechlab.analysis.tokens import token_strings
    from mechlab.io import write_files
    from mechlab.models.loading import load_model
    from mechlab.present.features import neuron_page, neuron_token_ids

    model = load_model(args.model or records.spec or records.model)
    records = NeuronRecords.load(args.directory, model)  # the weights hash checked too
    pages = {}
    for name, neuron in zip(names, neurons, strict=True):
        ids = sorted(neuron_token_ids(records, args.layer, neuron))
        token_text = dict(zip(ids, token_strings(model, ids), strict=True))
        pages[name] = neuron_page(records, args.layer, neuron, token_text)
    write_files(target, pages)
    say(f"wrote {', '.join(str(target / name) for name in names)}")
    return 0


def run_sae_train(args: argparse.Namespace) -> int:
    from mechlab.io import check_output_targets

    float32_only(args, "an SAE")
    check_layers_before_loading(args.model, [args.layer])
    check_output_targets(args.out, ["sae.safetensors", "sae.json", "checkpoint.safetensors"])
    from mechlab.io import exclusive_run, output_writes

    with exclusive_run(args.out), output_writes(args.out):  # a checkpoint on Ctrl-C: one run at
        return sae_train(args)  # a time, and a full disk is one line


def sae_train(args: argparse.Namespace) -> int:
    from mechlab.analysis.sae import check_arguments, remove_checkpoint, train_sae
    from mechlab.corpus import load_corpus
    from mechlab.io import write_files
    from mechlab.models.loading import load_model
    from mechlab.present.artifacts import sae_files
    from mechlab.present.text import sae_table

    model = load_model(args.model, **placement(args))
    check_arguments(model, args.layer, args.site, args.expansion, args.k)
    corpus = load_corpus("wikipedia")
    sae = train_sae(
        model,
        corpus.train,
        layer=args.layer,
        site=args.site,
        expansion=args.expansion,
        k=args.k,
        tokens=args.tokens,
        seed=args.seed,
        held_out=corpus.held_out,
        epochs=args.epochs,
        progress=True,
        checkpoint=args.out,
        corpus=corpus.manifest(),
    )
    if sae.manifest["interrupted"]:
        warn(
            f"mechlab sae train: interrupted; the checkpoint in {args.out} continues with the "
            "same command"
        )
        return 130
    console().print(sae_table(sae))
    write_files(args.out, sae_files(sae))
    remove_checkpoint(args.out)
    say(f"wrote {args.out}; its features: mechlab sae show {args.out} --out PAGES")
    return 0


def run_sae_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mechlab.io import check_output_targets, read_json_object

    json_path = Path(args.directory) / "sae.json"
    if not json_path.is_file():
        raise InputError(
            f"no SAE in {args.directory!r} (no sae.json): train one with `mechlab sae train "
            "--out DIR`"
        )
    manifest = read_json_object(json_path, fix="train it again with `mechlab sae train`")
    width = manifest.get("width")
    for feature in args.feature or []:
        if isinstance(width, int) and feature >= width:
            raise InputError(f"feature {feature} is out of range: this SAE has {width} latents")
    names = ["index.html", "features.json"] + [f"feature_{f}.html" for f in args.feature or []]
    check_output_targets(args.out, names)
    from mechlab.analysis.sae import SAE, feature_records
    from mechlab.analysis.tokens import token_strings
    from mechlab.io import json_text, write_files
    from mechlab.models.loading import load_model
    from mechlab.present.features import features_index_page, unit_page, unit_token_ids

    model = load_model(args.model or str(manifest.get("spec") or manifest.get("model")))
    sae = SAE.load(args.directory, model)
    texts, _ = corpus_paragraphs(held_out=True)
    asked = {"tokens": args.tokens} if args.tokens else {}  # else the library's default
    records = feature_records(model, sae, texts, progress=True, **asked)
    ranking = records.frac_positive[0].argsort(descending=True).tolist()
    alive = [f for f in ranking if records.frac_positive[0, f] > 0]
    chosen = list(dict.fromkeys(args.feature)) if args.feature else alive[: args.top]
    ids = set()
    for feature in set(chosen) | set(alive):
        where = records.top_where[0, feature].tolist()
        ids |= {records.window_tokens(*w)[records.context] for w in where}
    for feature in chosen:
        ids |= unit_token_ids(records, sae.layer, feature)
    ids.discard(None)
    ordered = sorted(ids)
    token_text = dict(zip(ordered, token_strings(model, ordered), strict=True))
    files = {
        f"feature_{f}.html": unit_page(records, sae.layer, f, token_text, kind="feature")
        for f in chosen
    }
    files["index.html"] = features_index_page(
        records, alive, token_text, {f: f"feature_{f}.html" for f in chosen}
    )
    files["features.json"] = json_text(
        {
            "sae": str(args.directory),
            "tokens_seen": records.tokens_seen,
            "dead_on_these_tokens": len(ranking) - len(alive),
            "density": records.frac_positive[0].tolist(),
            "max_activation": records.top_values[0, :, 0].tolist(),
            "pages": chosen,
        }
    )
    write_files(args.out, files)
    say(f"wrote {Path(args.out) / 'index.html'} and {len(chosen)} feature pages")
    return 0


def run_attribute(args: argparse.Namespace) -> int:
    from mechlab.io import check_output_targets

    if not args.prompt.strip():
        raise InputError(
            "the prompt is empty: pass some text, e.g. --prompt 'The capital of France is'"
        )
    names = ["attribution.json", "attribution.html", "attribution.png"]
    check_output_targets(args.out, names + (["randomization.png"] if args.sanity else []))
    from mechlab.analysis.attribution import (
        attribute,
        baseline_token,
        check_layer,
        check_steps,
        randomization_check,
    )
    from mechlab.io import write_files
    from mechlab.models.loading import load_model
    from mechlab.present.artifacts import attribution_files

    check_steps(args.steps, args.max_steps)
    model = load_model(args.model, **placement(args))
    if args.layer is not None:  # both checked before any method runs
        check_layer(model, args.layer)
    baseline_token(model, args.baseline)
    options = dict(answer=args.answer, wrong=args.wrong, steps=args.steps, baseline=args.baseline)
    options.update(layer=args.layer, max_steps=args.max_steps)
    methods = list(dict.fromkeys(args.method or ATTRIBUTION_METHODS))
    results = [
        attribute(model, args.prompt, method=method, progress=True, **options) for method in methods
    ]
    for result in results:
        say(repr(result))
    checks = None
    if args.sanity:
        checks = [
            randomization_check(model, args.prompt, method=method, progress=True, **options)
            for method in methods
        ]
        for check in checks:
            say(repr(check))
    write_files(args.out, attribution_files(results, checks))
    say(f"wrote {args.out}")
    return 0


def run_attention(args: argparse.Namespace) -> int:
    from mechlab.io import check_output_targets

    if not args.prompt.strip():
        raise InputError(
            "the prompt is empty: pass some text, e.g. --prompt 'The capital of France is'"
        )
    from mechlab.present.artifacts import attention_file_names

    # the layers drawn, when the arguments name them; every layer's are checked once it is loaded
    named = sorted(set(args.layer or []) | {layer for layer, _ in args.heads or []})
    check_layers_before_loading(args.model, named)
    check_output_targets(args.out, attention_file_names(named))
    from mechlab.analysis.attention import head_patterns, select_heads
    from mechlab.io import write_files
    from mechlab.models.loading import load_model
    from mechlab.present.artifacts import attention_files
    from mechlab.present.views import MAX_VIEW_TOKENS

    model = load_model(args.model, **placement(args))
    selected = select_heads(model, layers=args.layer or [], heads=args.heads or [])
    check_output_targets(args.out, attention_file_names([heads[0][0] for heads in selected]))
    layers = [head_patterns(model, args.prompt, heads, last=MAX_VIEW_TOKENS) for heads in selected]
    write_files(args.out, attention_files(model.cfg.model_name, layers))
    say(f"wrote {args.out}/attention.html and {len(selected)} PNGs")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mechlab.io import check_output_targets

    if args.json:
        check_output_targets(Path(args.json).parent, [Path(args.json).name], flag="--json")
    from mechlab.analysis.tokens import to_tokens
    from mechlab.io import json_text, write_files
    from mechlab.models.huggingface import load_hf_model
    from mechlab.models.loading import hugging_face_directory, load_model
    from mechlab.present.text import parity_table
    from mechlab.scratch.model import Transformer
    from mechlab.scratch.parity import compare

    model = load_model(args.model, **placement(args))
    tokens = to_tokens(model, args.prompt)
    reports = [compare(Transformer.from_hooked(model), model, tokens)]
    hf_directory = hugging_face_directory(args.model)
    if hf_directory is not None:  # also the Hugging Face model itself, imported without the library
        hf_model = load_hf_model(hf_directory)
        reports.append(compare(Transformer.from_hf(hf_model), hf_model, tokens))
    for report in reports:
        console().print(
            parity_table(
                report, title=f"{args.model}: from-scratch Transformer vs {report.reference}"
            )
        )
    if args.json:
        path = Path(args.json)
        document = dict(reports[0].to_json(), model=args.model, prompt=args.prompt)
        if len(reports) > 1:
            document["hugging_face"] = reports[1].to_json()
        write_files(path.parent, {path.name: json_text(document)}, flag="--json")
    failed = [report for report in reports if not report.passed]
    for report in reports:
        if report.passed:
            say(
                f"vs {report.reference}: all {len(report.components)} components agree "
                f"(atol={report.atol}, scaled by the component's rms where above one; "
                f"rtol={report.rtol})"
            )
        else:
            say(
                f"vs {report.reference}: {len(report.failures)} components differ; the first is "
                f"{report.first_failure}"
            )
    return 1 if failed else 0


def run_models(args: argparse.Namespace) -> int:
    from rich.table import Table

    from mechlab.models.loading import cache_dir, model_availability
    from mechlab.terminal import markup_safe

    table = Table(title=markup_safe(f"model specs (cache: {cache_dir()})"))
    for column in ["spec", "kind", "offline now", "note"]:
        table.add_column(column)
    for spec, kind, offline, note in model_availability():
        table.add_row(
            markup_safe(spec),
            markup_safe(kind),
            "[green]yes[/]" if offline else "[red]no[/]",
            markup_safe(note),
        )
    table.caption = (
        "also accepted: any TransformerLens official name, or a local checkpoint directory"
    )
    console().print(table)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    import torch
    from rich.table import Table

    from mechlab.analysis.tokens import to_tokens, token_strings
    from mechlab.models.loading import load_model
    from mechlab.terminal import markup_safe

    model = load_model(args.model, **placement(args))
    if args.top_k > model.cfg.d_vocab:
        raise InputError(
            f"--top-k {args.top_k} is more than the {model.cfg.d_vocab} tokens of "
            f"{model.cfg.model_name}'s vocabulary"
        )
    tokens = to_tokens(model, args.prompt)
    with torch.inference_mode():
        probs = model(tokens)[0, -1].softmax(-1)
    top = probs.topk(args.top_k)
    table = Table(title=markup_safe(f"{args.model}: next token after {args.prompt!r}"))
    table.add_column("rank", justify="right")
    table.add_column("token")
    table.add_column("probability", justify="right")
    for rank, (p, token) in enumerate(
        zip(top.values, token_strings(model, top.indices), strict=True), start=1
    ):
        table.add_row(str(rank), markup_safe(repr(token)), f"{p.item():.3f}")
    console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

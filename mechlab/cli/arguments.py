"""Argument types and the option blocks several commands share. Each type is checked while
parsing, before anything is loaded, and answers with one line naming the fix; only the standard
library and mechlab's light modules are imported here."""

import argparse
import re
from collections.abc import Callable

from mechlab.checks import check_seed, is_prime
from mechlab.defaults import (
    DEFAULT_MODEL,
    DEVICES,
    DTYPES,
    MAX_GROKKING_P,
)
from mechlab.errors import InputError, MechlabError
from mechlab.labels import parse_heads


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


def count_up_to(maximum: int, default: int) -> Callable[[str], int]:
    """An argument type: a whole number from 1 to `maximum` (the message names the default)."""

    def count(text: str) -> int:
        value = whole_number(text, 1)
        if value > maximum:
            raise argparse.ArgumentTypeError(
                f"must be at most {maximum}, got {value} ({default} is the default)"
            )
        return value

    return count


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


# --------------------------------------------------------------------------------------------------
# Option blocks


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


def add_answer_options(parser: argparse.ArgumentParser) -> None:
    """--prompt, --answer and --wrong: one prompt and the logit (difference) to explain."""
    parser.add_argument("--prompt", required=True)
    parser.add_argument(
        "--answer",
        type=token_or_id,
        required=True,
        help="one token, e.g. ' Paris', or id:N for token id N",
    )
    parser.add_argument(
        "--wrong", type=token_or_id, help="one token: attribute logit(answer) - logit(wrong)"
    )


def add_out_option(parser: argparse.ArgumentParser, help: str = "output directory") -> None:
    parser.add_argument("--out", required=True, help=help)


def add_corpus_options(
    parser: argparse.ArgumentParser, *, default: str | None = "wikipedia"
) -> None:
    """--corpus, --text-column and --held-out: the text a command learns from (see
    mechlab.load_corpus)."""
    parser.add_argument(
        "--corpus",
        metavar="SPEC",
        type=non_empty,
        default=default,
        help="the text: wikipedia or english (built in, offline), a .txt file, a directory of .txt "
        "files, a .jsonl or .parquet file, a directory saved by datasets.save_to_disk, or "
        f"hf:NAME[:CONFIG][:SPLIT] (default {default or 'the one it was trained on'})",
    )
    parser.add_argument(
        "--text-column",
        metavar="NAME",
        type=non_empty,
        default="text",
        help="the field of each JSONL line or dataset row that holds the text (default text)",
    )
    parser.add_argument(
        "--held-out",
        metavar="SPEC",
        type=non_empty,
        help="held-out text from another corpus spec (default: a tenth of the documents, by hash)",
    )

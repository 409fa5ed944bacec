"""Argument checks shared by the library's public functions and the CLI's argument types: each
raises InputError naming the bad value and the fix. Imports nothing heavy, so the CLI can run them
while parsing, before torch is loaded."""

import math

from mechlab.errors import InputError

# Seeds go to torch.Generator.manual_seed (at most 2**64 - 1, and some routines add an offset to
# the seed) and numpy's default_rng: every seed in [0, 2**63 - 1] is accepted by both.
MAX_SEED = 2**63 - 1


def is_whole_number(value: object) -> bool:
    """An int that is not a bool (True is an int to Python, never a count or a seed to mechlab)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_seed(seed: object) -> int:
    """A seed: a whole number from 0 to MAX_SEED."""
    if not is_whole_number(seed) or not 0 <= seed <= MAX_SEED:  # type: ignore[operator]
        shown = f"a number of {len(str(seed))} digits" if is_whole_number(seed) else repr(seed)
        raise InputError(f"seed must be a whole number from 0 to 2**63 - 1, got {shown}: e.g. 0")
    return seed  # type: ignore[return-value]


def check_count(value: object, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number in [minimum, maximum]."""
    if not is_whole_number(value) or value < minimum:  # type: ignore[operator]
        raise InputError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    if maximum is not None and value > maximum:  # type: ignore[operator]
        shown = f"{value:,}" if len(str(value)) <= 30 else f"a number of {len(str(value))} digits"
        raise InputError(f"{name} must be at most {maximum:,}, got {shown}")
    return value  # type: ignore[return-value]


def is_prime(n: int) -> bool:
    """Trial division up to the integer square root: exact for any int, fast for the moduli mechlab
    trains on (callers bound n first: 2**61 - 1 would take minutes)."""
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def other_weights(recorded: object, loaded: str, preposition: str) -> str:
    """How to name the model a file was made for when the loaded one's weights hash differs:
    "'a', not to 'b' (another weights hash)", without naming one model twice when the names
    agree."""
    if recorded == loaded:
        return f"{loaded!r} with other weights (the same name, another weights hash)"
    return f"{recorded!r}, not {preposition} {loaded!r} (another weights hash)"

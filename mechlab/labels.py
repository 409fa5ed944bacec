"""How heads are named, in one place: (18, 6) is written "L18H6" everywhere (reprs, tables, pages,
figures), and "18.6" is how a user types it on the command line.

A base module, below every layer, because result classes' one-line reprs name heads too."""

from collections.abc import Iterable, Sequence

# the three ways a head composes with an earlier one (Elhage et al. 2021)
KIND_NAMES = {"q": "Q-composition", "k": "K-composition", "v": "V-composition"}


def head_label(layer: int, head: int) -> str:
    """(18, 6) -> "L18H6"."""
    return f"L{layer}H{head}"


def heads_label(heads: Iterable[Sequence]) -> str:
    """(layer, head[, score...]) rows, as tuples or JSON lists -> "L18H6, L17H3"."""
    return ", ".join(head_label(row[0], row[1]) for row in heads)


def scored_heads_label(rows: Iterable[Sequence], spec: str = ".2f") -> str:
    """(layer, head, score) rows -> "L18H6 0.91, L17H3 0.88" (`spec` formats the score)."""
    return ", ".join(f"{head_label(layer, head)} {score:{spec}}" for layer, head, score in rows)


def parse_heads(text: str) -> list[tuple[int, int]]:
    """'5.1,5.5' -> [(5, 1), (5, 5)]; ValueError naming the item that is not LAYER.HEAD."""
    heads = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        layer, dot, head = item.partition(".")
        if not dot or not layer.isdigit() or not head.isdigit():
            raise ValueError(f"head {item!r} is not LAYER.HEAD: write heads like 5.1,5.5")
        heads.append((int(layer), int(head)))
    if not heads:
        raise ValueError(f"no heads in {text!r}: write heads like 5.1,5.5")
    return heads

"""What `mechlab models` and `mechlab predict` print: the model specs and whether each loads
offline, and a model's next tokens."""

from collections.abc import Iterable

from rich.table import Table

from mechlab.analysis.tokens import Prediction
from mechlab.terminal import markup_safe


def models_table(rows: Iterable[tuple[str, str, bool, str]], cache: object) -> Table:
    """`mechlab models`: each spec, its kind, whether it loads offline now, and a note."""
    table = Table(title=markup_safe(f"model specs (cache: {cache})"))
    for column in ["spec", "kind", "offline now", "note"]:
        table.add_column(column)
    for spec, kind, offline, note in rows:
        table.add_row(
            markup_safe(spec),
            markup_safe(kind),
            "[green]yes[/]" if offline else "[red]no[/]",
            markup_safe(note),
        )
    table.caption = (
        "also accepted: any TransformerLens official name, or a local checkpoint directory"
    )
    return table


def prediction_table(prediction: Prediction, *, spec: str) -> Table:
    table = Table(title=markup_safe(f"{spec}: next token after {prediction.prompt!r}"))
    table.add_column("rank", justify="right")
    table.add_column("token")
    table.add_column("probability", justify="right")
    pairs = zip(prediction.tokens, prediction.probabilities, strict=True)
    for rank, (token, p) in enumerate(pairs, start=1):
        table.add_row(str(rank), markup_safe(repr(token)), f"{p:.3f}")
    return table

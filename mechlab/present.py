"""Terminal tables (rich) made from result objects. Nothing here computes; see plots.py for figures."""

from rich.table import Table

from mechlab.parity import ParityReport


def parity_table(report: ParityReport, *, title: str) -> Table:
    table = Table(title=title)
    for column, justify in [("component", "left"), ("max abs err", "right"), ("max rel err", "right"), ("", "center")]:
        table.add_column(column, justify=justify)
    for c in report.components:
        table.add_row(c.name, f"{c.max_abs_err:.2e}", f"{c.max_rel_err:.2e}", "[green]ok[/]" if c.passed else "[red]FAIL[/]")
    return table

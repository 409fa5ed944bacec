"""The from-scratch Transformer against its reference, presented: each component's error as a page
and a terminal table, the verdict, and `mechlab verify --json`."""

import html

from rich.console import JustifyMethod
from rich.table import Table

from mechlab.io import json_text
from mechlab.scratch.parity import ParityReport
from mechlab.terminal import markup_safe


def parity_html(report: ParityReport) -> str:
    """The verdict, and every component's errors in a collapsible table."""
    rows = "".join(
        f"<tr><td>{html.escape(c.name)}</td><td>{c.max_abs_err:.2e}</td>"
        f"<td>{c.max_rel_err:.2e}</td><td>{'ok' if c.passed else '<b>FAIL</b>'}</td></tr>"
        for c in report.components
    )
    verdict = (
        "all components agree" if report.passed else f"first difference at {report.first_failure}"
    )
    if report.problem:
        return f"<p><b>FAILED</b>: {html.escape(report.problem)}</p>"
    if report.hint:
        verdict += f"; hint: {report.hint}"
    return (
        f"<p><b>{html.escape(verdict)}</b> (atol={report.atol}, rtol={report.rtol}, against "
        f"{html.escape(report.reference)})</p><details><summary>all {len(report.components)} "
        "components</summary><table><tr><th>component</th><th>max abs err</th>"
        f"<th>max rel err</th><th></th></tr>{rows}</table></details>"
    )


def parity_table(report: ParityReport, *, title: str) -> Table:
    table = Table(title=markup_safe(title))
    columns: list[tuple[str, JustifyMethod]] = [
        ("component", "left"),
        ("max abs err", "right"),
        ("max rel err", "right"),
        ("atol x", "right"),  # the component's rms, where above one (see mechlab.scratch.parity)
        ("", "center"),
    ]
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for c in report.components:
        table.add_row(
            markup_safe(c.name),
            f"{c.max_abs_err:.2e}",
            f"{c.max_rel_err:.2e}",
            f"{c.scale:.3g}" if c.scale != 1.0 else "",
            "[green]ok[/]" if c.passed else "[red]FAIL[/]",
        )
    return table


def verdict_lines(reports: list[ParityReport]) -> list[str]:
    """`mechlab verify`'s verdict, one line per reference."""
    return [
        f"vs {report.reference}: all {len(report.components)} components agree "
        f"(atol={report.atol}, scaled by the component's rms where above one; rtol={report.rtol})"
        if report.passed
        else f"vs {report.reference}: {len(report.failures)} components differ; the first is "
        f"{report.first_failure}"
        for report in reports
    ]


def verify_json(reports: list, spec: str, prompt: str) -> str:
    """`mechlab verify --json`: the first report, the model and prompt, and the Hugging Face
    report where there is one."""
    document = dict(reports[0].to_json(), model=spec, prompt=prompt)
    if len(reports) > 1:
        document["hugging_face"] = reports[1].to_json()
    return json_text(document)

"""Activation patching, presented: the grid as a figure and as an HTML table with hover values, the
terminal table, and the files of `mechlab patch`."""

import html

import numpy as np
from rich.console import JustifyMethod
from rich.table import Table

from mechlab.analysis.patching import PatchResult
from mechlab.io import figure_png, json_text
from mechlab.present.figure import Figure, _diverging, new_figure, plain, short
from mechlab.present.page import Files, declared, grid_table_html
from mechlab.terminal import markup_safe


def plot_patch_grid(result: PatchResult) -> Figure:
    """The patching grid: 1 = the clean run's logit difference restored, 0 = still corrupted."""
    values = result.grid.numpy()
    rows, cols = values.shape
    figure = new_figure(figsize=(2.5 + 0.45 * cols, 1.6 + 0.2 * rows))
    ax = figure.subplots()
    _diverging(ax, figure, values, max(1.0, float(np.abs(values).max())))
    step = max(1, rows // 40)
    ax.set_yticks(range(0, rows, step), [plain(result.row_labels[i]) for i in range(0, rows, step)])
    heads = result.over == "heads"
    ax.set_xticks(
        range(cols), [short(c, 14) for c in result.col_labels], rotation=0 if heads else 90
    )
    ax.tick_params(labelsize=7)
    ax.set_xlabel("head" if heads else "position: token of the clean run")
    ax.set_ylabel("layer" if heads else "activation")
    ax.set_title(
        f"{plain(result.model)}: {result.method} patching over {result.over}\n"
        f"logit diff {plain(repr(result.answer))} - {plain(repr(result.wrong))}, normalised "
        f"(0 = corrupted {result.corrupted_logit_diff:.2f}, "
        f"1 = clean {result.clean_logit_diff:.2f})",
        fontsize=9,
    )
    figure.tight_layout()
    return figure


def patch_grid_html(result: PatchResult) -> str:
    """The patching grid as a table (hover a cell for its row, column and value), with the top
    cells listed above it."""
    top = ", ".join(f"{row} / {col}: {value:.2f}" for row, col, value in result.top(5))
    limit = max(1.0, float(result.grid.abs().max()))
    return (
        f"<p>{html.escape(repr(result))}</p><p>Largest cells: {html.escape(top)}</p>"
        + grid_table_html(result.grid, result.row_labels, result.col_labels, limit=limit)
    )


def patch_table(result: PatchResult, k: int = 10) -> Table:
    """The k cells that restore (or destroy) the most of the clean logit difference."""
    table = Table(
        title=markup_safe(
            f"{result.model}: {result.method} patching over {result.over}; logit diff "
            f"{result.answer!r} - {result.wrong!r}: clean {result.clean_logit_diff:.2f}, "
            f"corrupted {result.corrupted_logit_diff:.2f}"
        )
    )
    columns: list[tuple[str, JustifyMethod]] = [
        ("rank", "right"),
        ("activation", "left"),
        ("where", "left"),
        ("restored", "right"),
    ]
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for rank, (row, col, value) in enumerate(result.top(k), start=1):
        table.add_row(str(rank), markup_safe(row), markup_safe(col), f"{value:.3f}")
    table.caption = "restored: 0 = the corrupted run's logit difference, 1 = the clean run's"
    return table


def patch_caption(result: PatchResult) -> str:
    return (
        f"{result.model}: {result.method} activation patching over {result.over}, from the clean "
        f"prompt {result.clean!r} into the corrupted {result.corrupted!r}. Each cell is the logit "
        f"difference {result.answer!r} - {result.wrong!r} at the last position with that one "
        "activation patched, normalised: 0 = the corrupted run, 1 = the clean run. Hover a cell "
        "for its value."
    )


def patch_file_names(over: str) -> list[str]:
    return ["patch.json", f"patch_{over}.png", "patch.html"]


def patch_files(result: PatchResult) -> Files:
    """patch.json, patch_<over>.png and patch.html (the grid as a table with hover values)."""
    from mechlab.present.page import render_page

    files: Files = {
        "patch.json": json_text(result.to_json()),
        f"patch_{result.over}.png": figure_png(plot_patch_grid(result)),
        "patch.html": render_page(
            [(patch_caption(result), patch_grid_html(result))],
            title=f"{result.model}: activation patching",
        ),
    }
    return declared(files, patch_file_names(result.over))

"""The logit lens and the tuned lens, presented: the heatmaps and curves, the page's grid, the
terminal table, and the files of `mechlab lens` and `mechlab tune-lens`."""

import html
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from rich.table import Table

from mechlab.analysis.lens import LensCurves, LensResult
from mechlab.analysis.tuned_lens import LensEvaluation
from mechlab.io import figure_png, json_text
from mechlab.present.figure import Figure, new_figure, plain, short
from mechlab.present.page import Files, declared
from mechlab.terminal import markup_safe


def _lens_axes(
    result: LensResult, values: np.ndarray, title: str, **imshow: Any
) -> tuple[Figure, Axes]:
    """Rows bottom (embedding) to top (output), input tokens along x, next tokens on the top
    axis."""
    rows, pos = values.shape
    figure = new_figure(figsize=(1.5 + 0.75 * pos, 1.2 + 0.32 * rows))
    ax = figure.subplots()
    image = ax.imshow(values, origin="lower", aspect="auto", **imshow)
    ax.set_yticks(range(rows), [plain(label) for label in result.layers], fontsize=7)
    ax.set_xticks(range(pos), [short(t) for t in result.token_strs], rotation=90, fontsize=8)
    ax.set_xlabel("input token")
    top = ax.secondary_xaxis("top")
    top.set_xticks(
        range(pos), [short(t) for t in result.token_strs[1:]] + [""], rotation=90, fontsize=8
    )
    top.set_xlabel("actual next token")
    ax.set_title(f"{plain(result.model)}, {result.lens} lens: {title}", fontsize=9)
    figure.colorbar(image, ax=ax, fraction=0.03)
    return figure, ax


def plot_lens_top1(result: LensResult) -> Figure:
    """Each cell: the top-1 decoded token, coloured by its probability."""
    probs = result.top_probs[:, :, 0].numpy()
    figure, ax = _lens_axes(
        result,
        probs,
        "top-1 token per layer and position (colour: its probability)",
        cmap="Blues",
        vmin=0,
        vmax=1,
    )
    for row in range(probs.shape[0]):
        for position in range(probs.shape[1]):
            ax.text(
                position,
                row,
                short(result.top_tokens[row][position][0], 8),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if probs[row, position] > 0.6 else "black",
            )
    figure.tight_layout()
    return figure


def plot_lens_rank(result: LensResult) -> Figure:
    """Rank of the actual next token under each layer's decoding (0 = top-1), log colour scale."""
    from matplotlib.colors import LogNorm

    ranks = result.next_token_rank[:, :-1].numpy().astype(float) + 1
    padded = np.concatenate([ranks, np.full((ranks.shape[0], 1), np.nan)], axis=1)
    figure, _ax = _lens_axes(
        result,
        padded,
        "rank of the actual next token + 1 (log scale)",
        cmap="viridis_r",
        norm=LogNorm(vmin=1, vmax=max(2.0, np.nanmax(padded))),
    )
    figure.tight_layout()
    return figure


def plot_lens_kl(result: LensResult) -> Figure:
    """KL(output distribution || this layer's decoding), in nats."""
    kl = result.kl_to_final.numpy()
    figure, _ = _lens_axes(result, kl, "KL(final || layer) in nats", cmap="magma_r", vmin=0)
    figure.tight_layout()
    return figure


def plot_lens_curves(curves: LensCurves) -> Figure:
    """Per-layer averages over many prompts: how fast each layer's decoding approaches the
    output."""
    figure = new_figure(figsize=(14, 3.8))
    axes = figure.subplots(1, 3)
    x = np.arange(len(curves.layers))
    for ax, values, label in [
        (axes[0], curves.kl_to_final, "KL(final || layer), nats"),
        (axes[1], curves.mean_log_rank, "mean ln(1 + rank of next token)"),
        (axes[2], curves.top1_agreement, "top-1 agrees with output's top-1"),
    ]:
        ax.plot(x, values.numpy(), marker="o", markersize=3)
        ax.set_title(label, fontsize=9)
        ax.set_xticks(
            x[:: max(1, len(x) // 10)],
            [plain(curves.layers[i]) for i in x[:: max(1, len(x) // 10)]],
            rotation=60,
            fontsize=7,
        )
        ax.grid(alpha=0.3)
    figure.suptitle(f"logit lens averaged over {curves.n_prompts} prompts and all their positions")
    figure.tight_layout()
    return figure


def plot_tuned_vs_logit(evaluation: LensEvaluation) -> Figure:
    """Held-out KL(final || lens) per layer for the logit lens and the tuned lens, as in Figure 2 of
    Belrose et al. (2023); right: the cross-entropy with the actual next token."""
    figure = new_figure(figsize=(12, 4))
    kl_ax, ce_ax = figure.subplots(1, 2)
    rows = np.arange(len(evaluation.layers) - 1)  # the output row is the reference: KL 0
    for name, kl, cross_entropy, colour in [
        ("logit lens", evaluation.logit_kl, evaluation.logit_cross_entropy, "#1f77b4"),
        ("tuned lens", evaluation.tuned_kl, evaluation.tuned_cross_entropy, "#d62728"),
    ]:
        kl_ax.plot(rows, kl[:-1], color=colour, marker=".", label=name)
        ce_ax.plot(rows, cross_entropy[:-1], color=colour, marker=".", label=name)
    ce_ax.axhline(
        evaluation.logit_cross_entropy[-1],
        color="gray",
        linestyle="--",
        label="the model's own output",
    )
    kl_ax.set_yscale("log")
    kl_ax.set_ylabel("KL(final || lens), nats (log scale)")
    ce_ax.set_ylabel("cross-entropy with the next token, nats")
    for ax in (kl_ax, ce_ax):
        ax.set_xlabel("layer input (0 = embeddings)")
        ax.legend(fontsize=8)
    figure.suptitle(
        f"{evaluation.model}: logit lens vs tuned lens on {evaluation.tokens:,} held-out tokens"
    )
    figure.tight_layout()
    return figure


LENS_STYLE = """
<style>
table.mechlab-lens { border-collapse: collapse; font-family: monospace; font-size: 11px; }
table.mechlab-lens th { font-weight: normal; color: #555; padding: 0 4px; white-space: pre; }
table.mechlab-lens td { position: relative; padding: 2px 4px; border: 1px solid #fff;
  white-space: pre; }
table.mechlab-lens td .tip { display: none; position: absolute; z-index: 10; left: 0; top: 100%;
  background: #fff; color: #222; border: 1px solid #888; padding: 4px;
  box-shadow: 2px 2px 6px #aaa; }
table.mechlab-lens td:hover .tip { display: block; }
</style>
"""


def lens_grid_html(result: LensResult) -> str:
    """The logit lens as an HTML table, rows output (top) to embedding (bottom), one column per
    input position; a cell shows its top-1 token, shaded by probability, and its top-k on hover."""
    head = "".join(f"<th>{html.escape(token)}</th>" for token in result.token_strs)
    rows = []
    for row in reversed(range(len(result.layers))):
        cells = []
        for position in range(len(result.token_strs)):
            probs = result.top_probs[row, position].tolist()
            tokens = result.top_tokens[row][position]
            shade = int(255 - 155 * probs[0])
            tip = "<br>".join(
                f"{html.escape(repr(t))} {p:.3f}" for t, p in zip(tokens, probs, strict=True)
            )
            cells.append(
                f'<td style="background: rgb({shade},{shade},255)">{html.escape(tokens[0][:12])}'
                f'<span class="tip">{tip}</span></td>'
            )
        rows.append(f"<tr><th>{html.escape(result.layers[row])}</th>{''.join(cells)}</tr>")
    return (
        f'{LENS_STYLE}<table class="mechlab-lens"><tr><th></th>{head}</tr>{"".join(rows)}'
        f"<tr><th></th>{head}</tr></table>"
    )


def lens_summary_html(result: LensResult, max_positions: int = 12) -> str:
    """The lens as a table: output row first, the last `max_positions` positions, each cell its
    top-1 token and probability."""
    first = max(0, len(result.token_strs) - max_positions)
    positions = range(first, len(result.token_strs))
    head = "".join(f"<th>{html.escape(repr(result.token_strs[p]))}</th>" for p in positions)
    rows = []
    for row in reversed(range(len(result.layers))):
        cells = []
        for p in positions:
            prob = result.top_probs[row, p, 0].item()
            token = html.escape(repr(result.top_tokens[row][p][0]))
            shade = int(255 - 155 * prob)
            cells.append(
                f'<td style="background-color: rgb({shade},{shade},255)">'
                f"{token} <small>{prob:.2f}</small></td>"
            )
        rows.append(f"<tr><th>{html.escape(result.layers[row])}</th>{''.join(cells)}</tr>")
    note = f"<p>{html.escape(repr(result))}</p>"
    return f"{note}<table><tr><th>row</th>{head}</tr>{''.join(rows)}</table>"


def lens_table(result: LensResult, max_positions: int = 12) -> Table:
    """Layers x positions with each cell's top-1 token (the last `max_positions` positions)."""
    first = max(0, len(result.token_strs) - max_positions)
    table = Table(
        title=markup_safe(
            f"{result.model}: logit lens, top-1 token per layer (rows) and position (columns)"
        )
    )
    table.add_column("layer")
    for token in result.token_strs[first:]:
        table.add_column(markup_safe(repr(token)[1:-1][:10]), overflow="ellipsis", max_width=10)
    for row in range(len(result.layers)):
        cells = []
        for position in range(first, len(result.token_strs)):
            token, prob = (
                result.top_tokens[row][position][0],
                result.top_probs[row, position, 0].item(),
            )
            style = "bold" if prob > 0.5 else ("" if prob > 0.1 else "dim")
            cells.append(
                f"[{style}]{markup_safe(repr(token)[1:-1][:10])}[/]"
                if style
                else markup_safe(repr(token)[1:-1][:10])
            )
        table.add_row(markup_safe(result.layers[row]), *cells)
    if result.target_id is not None:
        layer = result.first_top1_layer
        table.caption = markup_safe(
            f"target {result.target_token!r}: top-1 at the last position from "
            + (
                f"row {layer} ({result.layers[layer]})"
                if layer is not None
                else "no layer (not the output's top-1)"
            )
        )
    return table


LENS_FIGURES = ["lens_top1.png", "lens_rank.png", "lens_kl.png"]


def lens_figures(result: LensResult, prefix: str = "lens") -> dict[str, bytes]:
    """nostalgebraist's three heatmaps as PNG bytes: top-1 token, rank of the next token, KL."""

    return {
        f"{prefix}_top1.png": figure_png(plot_lens_top1(result)),
        f"{prefix}_rank.png": figure_png(plot_lens_rank(result)),
        f"{prefix}_kl.png": figure_png(plot_lens_kl(result)),
    }


def lens_caption(result: LensResult) -> str:
    if result.target_id is None:
        where = ""
    elif result.first_top1_layer is not None:
        where = (
            f" {result.target_token!r} becomes the top-1 prediction at the last position at row "
            f"{result.first_top1_layer} ({result.layers[result.first_top1_layer]})."
        )
    else:
        where = f" {result.target_token!r} is not the final top-1."
    return (
        f"{result.model}: logit lens on {result.prompt!r}. Each cell decodes the residual stream "
        "at one layer (row) and position (column) through the final norm and unembedding and "
        "shows the most likely next token, shaded by its probability; hover a cell for its "
        f"top-k.{where}"
    )


def lens_file_names(*, curves: bool) -> list[str]:
    """The files lens_files writes: the CLI checks these before any work."""
    return [*LENS_FIGURES, "lens.json", "lens.html"] + (["lens_curves.png"] if curves else [])


def lens_files(
    result: LensResult, curves: LensCurves | None = None, prompts: list[str] | None = None
) -> Files:
    """lens.json, the three heatmaps, lens.html; with `curves` (many prompts) also
    lens_curves.png (lens_file_names)."""
    from mechlab.present.page import render_page

    report = result.to_json()
    files: Files = dict(lens_figures(result))
    if curves is not None:
        report.update(prompts=prompts, curves=curves.to_json())
        files["lens_curves.png"] = figure_png(plot_lens_curves(curves))
    files["lens.json"] = json_text(report)
    files["lens.html"] = render_page(
        [(lens_caption(result), lens_grid_html(result))], title=f"{result.model}: logit lens"
    )
    return declared(files, lens_file_names(curves=curves is not None))


def tuned_lens_file_names(*, trained: bool) -> list[str]:
    """The files `mechlab tune-lens` writes: the evaluation, and when it trains, the lens and the
    checkpoint it writes as it trains (removed at the end)."""
    from mechlab.defaults import TUNED_LENS_CHECKPOINT_FILES, TUNED_LENS_FILES

    trained_files = [*TUNED_LENS_FILES, *TUNED_LENS_CHECKPOINT_FILES] if trained else []
    return ["eval.json", "tuned_vs_logit.png", *trained_files]


def tuned_lens_files(evaluation: LensEvaluation) -> Files:
    """eval.json and tuned_vs_logit.png."""

    files: Files = {
        "eval.json": json_text(evaluation.to_json()),
        "tuned_vs_logit.png": figure_png(plot_tuned_vs_logit(evaluation)),
    }
    return declared(files, tuned_lens_file_names(trained=False))

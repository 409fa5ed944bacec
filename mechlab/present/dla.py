"""Direct logit attribution, presented: per head and per layer, as figures, an HTML table and a
terminal table, and the files of `mechlab dla`."""

import html

import numpy as np
from rich.table import Table

from mechlab.analysis.dla import AttributionResult
from mechlab.io import figure_png, json_text
from mechlab.labels import head_label, scored_heads_label
from mechlab.present.figure import Figure, _diverging, new_figure, plain
from mechlab.present.page import Files, declared, grid_table_html, image_html
from mechlab.terminal import markup_safe


def plot_dla_heads(result: AttributionResult) -> Figure:
    """Each head's direct contribution to the logit (difference), layers x heads."""
    values = result.heads.numpy()
    n_layers, n_heads = values.shape
    figure = new_figure(figsize=(1.8 + 0.55 * n_heads, 1.4 + 0.28 * n_layers))
    ax = figure.subplots()
    _diverging(ax, figure, values)
    ax.set_xticks(range(n_heads), [f"H{h}" for h in range(n_heads)], fontsize=7)
    ax.set_yticks(range(n_layers), [f"L{layer}" for layer in range(n_layers)], fontsize=7)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(
        f"{plain(result.model)}: direct logit attribution per head\n{plain(result.what)} = "
        f"{result.total:.2f} at the last position",
        fontsize=9,
    )
    figure.tight_layout()
    return figure


def plot_dla_layers(result: AttributionResult) -> Figure:
    """Per layer: the heads' sum (plus the output bias) and the MLP, with the embeddings first;
    and the running total, which ends at the model's own value."""
    attn = (result.heads.sum(1) + result.attn_bias).numpy()
    mlps = result.mlps.numpy()
    n_layers = len(mlps)
    figure = new_figure(figsize=(max(6, 0.3 * n_layers + 3), 4))
    ax = figure.subplots()
    x = np.arange(n_layers)
    ax.bar(x - 0.2, attn, width=0.4, label="attention (heads + b_O)", color="#1f77b4")
    ax.bar(x + 0.2, mlps, width=0.4, label="MLP", color="#ff7f0e")
    ax.bar([-1], [result.embed], width=0.6, label="embeddings", color="#2ca02c")
    running = result.embed + np.cumsum(attn + mlps) + result.unembed_bias
    ax.plot(x, running, color="black", marker=".", label="running total (with unembed bias)")
    ax.axhline(0, color="gray", linewidth=0.6)
    ax.set_xticks([-1, *x], ["emb", *[str(layer) for layer in x]], fontsize=7)
    ax.set_xlabel("layer")
    ax.set_ylabel("direct contribution")
    ax.set_title(
        f"{plain(result.model)}: direct logit attribution per layer, {plain(result.what)} = "
        f"{result.total:.2f}",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def dla_html(result: AttributionResult) -> str:
    """The headline numbers, the top heads, and the layers x heads contributions as a table."""
    top = scored_heads_label(result.top_heads(5), "+.2f")
    n_layers, n_heads = result.heads.shape
    limit = max(float(result.heads.abs().max()), 1e-6)
    return (
        f"<p>{html.escape(repr(result))}</p><p>{html.escape(result.what)} = {result.total:.3f}: "
        f"embeddings {result.embed:+.3f}, heads {result.heads.sum():+.3f}, attention biases "
        f"{result.attn_bias.sum():+.3f}, MLPs {result.mlps.sum():+.3f}, unembedding bias "
        f"{result.unembed_bias:+.3f}.</p><p>Top heads: {html.escape(top)}</p>"
        + grid_table_html(
            result.heads,
            [f"L{layer}" for layer in range(n_layers)],
            [f"H{head}" for head in range(n_heads)],
            limit=limit,
            fmt="{:+.2f}",
        )
    )


def dla_table(result: AttributionResult, k: int = 10) -> Table:
    """The sum by kind of component, then the k heads with the largest direct contribution."""
    table = Table(title=markup_safe(f"{result.model}: direct logit attribution of {result.what}"))
    table.add_column("component")
    table.add_column("contribution", justify="right")
    for name, value in [
        ("embeddings", result.embed),
        ("all heads", result.heads.sum().item()),
        ("attention biases", result.attn_bias.sum().item()),
        ("all MLPs", result.mlps.sum().item()),
        ("unembedding bias", result.unembed_bias),
    ]:
        table.add_row(name, f"{value:+.3f}")
    table.add_row("[b]total[/] (the model's own)", f"[b]{result.total:+.3f}[/]")
    table.add_row(
        f"sum of the parts (within {result.tolerance:.2g} in {result.dtype})",
        f"{result.sum_of_parts:+.3f}",
    )
    for layer, head, value in result.top_heads(k):
        table.add_row(head_label(layer, head), f"{value:+.3f}")
    table.caption = "through the final norm with its scale frozen at the final residual's own"
    return table


def dla_caption(result: AttributionResult) -> str:
    return (
        f"{result.model}: direct logit attribution of {result.what} at the last position of "
        f"{result.prompt!r}: what each head and MLP writes straight into it, through the final "
        "norm with its scale frozen at the final residual stream's own. The parts add up to "
        f"{result.sum_of_parts:.3f}, the model's own is {result.total:.3f}: within the "
        f"{result.tolerance:.2g} that rounding in {result.dtype} allows (checked)."
    )


DLA_FILES = ["dla.json", "dla_heads.png", "dla_layers.png", "dla.html"]


def dla_files(result: AttributionResult) -> Files:
    """dla.json, dla_heads.png, dla_layers.png and dla.html."""
    from mechlab.present.page import render_page

    heads_png = figure_png(plot_dla_heads(result))
    layers_png = figure_png(plot_dla_layers(result))
    files: Files = {
        "dla.json": json_text(result.to_json()),
        "dla_heads.png": heads_png,
        "dla_layers.png": layers_png,
        "dla.html": render_page(
            [
                (dla_caption(result), dla_html(result)),
                ("Per layer, and the running total.", image_html(layers_png, "per layer")),
            ],
            title=f"{result.model}: direct logit attribution",
        ),
    }
    return declared(files, DLA_FILES)

"""The circuits from the weights, presented: composition heatmaps, copying scores, the induction
circuit and positional QK as figures; the strongest compositions as HTML tables and a terminal
table; the command's files (circuits.json, the figures, circuits.html) and the report's section.
The first capability laid out the way docs/architecture.md describes: one analysis module
(mechlab.analysis.circuits), this present module, one CLI module, one test module."""

import html

import matplotlib
import numpy as np
from rich.console import JustifyMethod
from rich.table import Table

from mechlab.analysis.circuits import Circuits, InductionCircuit
from mechlab.errors import InputError
from mechlab.io import figure_png, json_text
from mechlab.labels import KIND_NAMES, head_label, scored_heads_label
from mechlab.present.figure import Figure, new_figure, plain, plot_layer_heads
from mechlab.present.page import (
    GRID_STYLE,
    Files,
    declared,
    grid_table_html,
    image_html,
    render_page,
    sequential_colour,
)
from mechlab.terminal import markup_safe

# --------------------------------------------------------------------------------------------------
# Figures


def plot_composition(result: Circuits, kind: str) -> Figure:
    """Every earlier head (rows) against every later head (columns), in layer order, coloured by
    composition score; the colour bar marks the random baseline's mean and 95th percentile, and
    lines separate the layers."""
    n_layers, n_heads = result.n_layers, result.n_heads
    values = result.composition[kind].reshape(n_layers * n_heads, n_layers * n_heads).numpy()
    layer = np.repeat(np.arange(n_layers), n_heads)
    values = np.ma.masked_where(layer[:, None] >= layer[None, :], values)  # not earlier: no score
    side = min(11.0, 3.0 + 0.05 * n_layers * n_heads)
    figure = new_figure(figsize=(side + 1.6, side))
    ax = figure.subplots()
    top = max(float(values.max()), result.baseline["p95"] * 1.05)
    cmap = matplotlib.colormaps["magma_r"].with_extremes(bad="#f4f4f4")
    image = ax.imshow(values, cmap=cmap, vmin=0, vmax=top, interpolation="nearest")
    for boundary in range(1, n_layers):
        for line in (ax.axhline, ax.axvline):
            line(boundary * n_heads - 0.5, color="#bbbbbb", linewidth=0.3)
    ticks = list(range(0, n_layers, max(1, n_layers // 15)))
    positions = [layer * n_heads + (n_heads - 1) / 2 for layer in ticks]
    ax.set_xticks(positions, [f"L{layer}" for layer in ticks], fontsize=7)
    ax.set_yticks(positions, [f"L{layer}" for layer in ticks], fontsize=7)
    ax.set_xlabel("later head (reads)")
    ax.set_ylabel("earlier head (writes: its OV circuit)")
    colorbar = figure.colorbar(image, ax=ax, fraction=0.046)
    colorbar.ax.axhline(result.baseline["p95"], color="#1f77b4", linewidth=1.5)
    colorbar.ax.text(
        1.6,
        result.baseline["p95"],
        "random\ncircuits'\n95th pct",
        fontsize=6,
        va="center",
        transform=colorbar.ax.get_yaxis_transform(),
    )
    l1, h1, l2, h2, score = result.top(kind, 1)[0] if n_layers > 1 else (0, 0, 0, 0, 0.0)
    ax.set_title(
        f"{plain(result.model)}: {KIND_NAMES[kind]} from the weights\n"
        f"strongest {head_label(l1, h1)} -> {head_label(l2, h2)} {score:.3f} "
        f"({score / result.baseline['mean']:.1f}x the random baseline "
        f"{result.baseline['mean']:.3f})",
        fontsize=9,
    )
    figure.tight_layout()
    return figure


def plot_copying(result: Circuits) -> Figure:
    """Each head's copying score (its full OV circuit's eigenvalues) and OV top-1 rate."""
    return plot_layer_heads(
        result.copying.numpy(),
        f"{plain(result.model)}\ncopying: eigenvalues of W_E W_V W_O W_U, sum(l) / sum(|l|)",
        low=-1.0,
        high=1.0,
    )


def plot_induction_circuit(circuit: InductionCircuit, k: int = 12) -> Figure:
    """For each induction head, the earlier heads with the strongest K-composition into it (bars,
    darker for a higher previous-token score), against the random baseline."""
    from matplotlib import colormaps

    heads = circuit.heads or []
    figure = new_figure(figsize=(6.5, 1.0 + 2.4 * max(1, len(heads))))
    axes = figure.subplots(max(1, len(heads)), 1, squeeze=False)[:, 0]
    cmap = colormaps["Oranges"]
    for ax, head in zip(axes, heads, strict=False):
        rows = head.composers[:k]
        scores = [row[2] for row in rows]
        colours = [cmap(0.15 + 0.85 * max(0.0, min(1.0, row[3]))) for row in rows]
        ax.bar(range(len(rows)), scores, color=colours, edgecolor="#555555", linewidth=0.5)
        ax.set_xticks(
            range(len(rows)), [head_label(row[0], row[1]) for row in rows], fontsize=7, rotation=45
        )
        for name, value, style in [
            ("mean", circuit.baseline["mean"], ":"),
            ("p95", circuit.baseline["p95"], "-"),
        ]:
            ax.axhline(value, color="#1f77b4", linestyle=style, linewidth=1, label=f"random {name}")
        for index, row in enumerate(rows):
            ax.text(index, row[2], f"{row[3]:.2f}", ha="center", va="bottom", fontsize=6)
        ax.set_ylabel("K-composition")
        ax.set_title(
            f"into {head_label(head.layer, head.head)} (induction {head.induction:.2f}); "
            "bar labels: previous-token score",
            fontsize=8,
        )
        ax.legend(fontsize=6, loc="upper right")
    if not heads:
        axes[0].text(
            0.5, 0.5, "no induction head above layer 0", ha="center", transform=axes[0].transAxes
        )
        axes[0].axis("off")
    figure.suptitle(
        f"{plain(circuit.model)}: which earlier heads the induction heads' keys read", fontsize=9
    )
    figure.tight_layout()
    return figure


def plot_positional_qk(result: Circuits) -> Figure:
    """The positional QK pattern of the head that attends most to the previous position."""
    if result.positional_qk is None:
        raise InputError(
            f"{result.model} has no positional QK pattern: {result.positional_qk_note}"
        )
    layer, head = result.positional_qk["head"]
    pattern = result.positional_qk["pattern"].numpy()
    figure = new_figure(figsize=(5, 4.4))
    ax = figure.subplots()
    image = ax.imshow(pattern, cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("key position")
    ax.set_ylabel("query position")
    ax.set_title(
        f"{plain(result.model)}: {head_label(layer, head)} on positions alone\n"
        "softmax(W_pos W_QK W_pos^T / scale), masked",
        fontsize=9,
    )
    figure.colorbar(image, ax=ax, fraction=0.046)
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------------------------------
# Tables


def compositions_table_html(result: Circuits, kind: str, k: int = 10) -> str:
    """The k strongest compositions of one kind, with each score's ratio to the random baseline."""
    baseline = result.baseline["mean"]
    limit = max(result.composition[kind].max().item(), 1e-12)
    rows = "".join(
        f'<tr><td>{head_label(l1, h1)}</td><td>{head_label(l2, h2)}</td><td style="background:'
        f'{sequential_colour(score, limit)}" title="{score:.6f}">{score:.3f}</td>'
        f"<td>{score / baseline:.1f}x</td></tr>"
        for l1, h1, l2, h2, score in result.top(kind, k)
    )
    return (
        f'<table style="{GRID_STYLE}"><tr><th>earlier head</th><th>later head</th>'
        f"<th>score</th><th>/ baseline</th></tr>{rows}</table>"
    )


def layer_pairs_html(result: Circuits, kind: str) -> str:
    """For each pair of layers (earlier, later), the strongest composition between their heads:
    hover a cell for the pair of heads and the score."""
    n_layers, n_heads = result.n_layers, result.n_heads
    scores = result.composition[kind]
    limit = max(scores.max().item(), 1e-12)
    head = "".join(f"<th>L{later}</th>" for later in range(1, n_layers))
    rows = []
    for earlier in range(n_layers - 1):
        cells = []
        for later in range(1, n_layers):
            if later <= earlier:
                cells.append("<td></td>")
                continue
            block = scores[earlier, :, later, :]
            index = int(block.argmax())
            value = block.flatten()[index].item()
            pair = (
                f"{head_label(earlier, index // n_heads)} -> {head_label(later, index % n_heads)}"
            )
            cells.append(
                f'<td style="background:{sequential_colour(value, limit)}" '
                f'title="{html.escape(f"{pair}: {value:.4f}")}">{value:.2f}</td>'
            )
        rows.append(f"<tr><th>L{earlier}</th>{''.join(cells)}</tr>")
    return (
        f'<table class="mechlab-grid" style="{GRID_STYLE}"><tr><th>earlier \\ later</th>{head}'
        f"</tr>{''.join(rows)}</table>"
    )


def circuits_html(result: Circuits) -> str:
    """What a notebook shows for Circuits, readable without scripts: the headline, the strongest
    compositions of each kind against the baseline, and the copying scores as a grid."""
    n_layers, n_heads = result.n_layers, result.n_heads
    baseline = result.baseline
    parts = [
        f"<p>{html.escape(repr(result))}</p>",
        f"<p>Random baseline: mean {baseline['mean']:.3f}, 95th percentile {baseline['p95']:.3f} "
        f"({html.escape(baseline['how'])}).</p>",
    ]
    if n_layers > 1:
        for kind in result.composition:
            parts.append(f"<h4>{KIND_NAMES[kind]}</h4>" + compositions_table_html(result, kind))
    parts.append(
        "<h4>Copying (hover a cell)</h4>"
        + grid_table_html(
            result.copying,
            [f"L{layer}" for layer in range(n_layers)],
            [f"H{head}" for head in range(n_heads)],
            limit=1.0,
        )
    )
    return "".join(parts)


def circuits_table(result: Circuits, k: int = 10) -> Table:
    """The k strongest compositions of each kind, with their ratio to the random baseline."""
    baseline = result.baseline["mean"]
    table = Table(title=markup_safe(f"{result.model}: strongest compositions, from the weights"))
    columns: list[tuple[str, JustifyMethod]] = [
        ("kind", "left"),
        ("earlier head", "left"),
        ("later head", "left"),
        ("score", "right"),
        ("/ baseline", "right"),
    ]
    for column, justify in columns:
        table.add_column(column, justify=justify)
    if result.n_layers > 1:
        for kind in result.composition:
            for l1, h1, l2, h2, score in result.top(kind, k):
                table.add_row(
                    KIND_NAMES[kind],
                    head_label(l1, h1),
                    head_label(l2, h2),
                    f"{score:.3f}",
                    f"{score / baseline:.1f}x",
                )
    copying = result.copying.flatten()
    most = [
        (i // result.n_heads, i % result.n_heads, copying[i].item())
        for i in copying.argsort(descending=True)[:5].tolist()
    ]
    table.caption = markup_safe(
        f"random baseline: mean {baseline:.3f}, 95th percentile {result.baseline['p95']:.3f}; "
        f"most copying heads: {scored_heads_label(most)}"
    )
    return table


# --------------------------------------------------------------------------------------------------
# The files and the report's section


def circuits_file_names(n_layers: int | None) -> list[str]:
    """The files circuits_files writes for a model of `n_layers` (None: not known yet, so every
    file it may write); composition needs two layers."""
    compositions = [f"composition_{kind}.png" for kind in "qkv"]
    several = n_layers is None or n_layers > 1
    return ["circuits.json", *(compositions if several else []), "copying.png", "circuits.html"]


def circuits_caption(result: Circuits) -> str:
    baseline = result.baseline
    return (
        f"{result.model}: composition scores read from the weights alone, |A B| / (|A| |B|) for "
        "an earlier head's OV circuit A and a later head's QK (Q-composition), QK transposed "
        "(K-composition) or OV circuit (V-composition). A random pair of circuits of these shapes "
        f"scores {baseline['mean']:.3f} on average (95th percentile {baseline['p95']:.3f}). "
        + " ".join(result.notes)
    )


def copying_caption(result: Circuits) -> str:
    sampled = (
        f"on {result.ov_top1_tokens} input tokens sampled from {result.d_vocab}"
        if result.ov_top1_tokens < result.d_vocab
        else "on every token"
    )
    return (
        "Copying: the eigenvalues l of each head's full OV circuit W_E W_V W_O W_U, "
        "sum(l) / sum(|l|) (1: the head copies what it attends to). OV top-1 (in circuits.json), "
        f"{sampled}: how often a token's own output is its largest."
    )


def induction_circuit_caption(circuit: InductionCircuit) -> str:
    lines = []
    for head in circuit.heads:
        if not head.composers:
            continue
        l1, h1, score, previous = head.composers[0]
        rank = head.previous_token_rank
        lines.append(
            f"{head_label(head.layer, head.head)} (induction {head.induction:.2f}) reads its keys "
            f"most from {head_label(l1, h1)} (K-composition {score:.3f}, "
            f"{score / circuit.baseline['mean']:.1f}x the baseline; previous-token score "
            f"{previous:.2f}); the first previous-token head is "
            + (f"number {rank} of its composers." if rank else "not among them.")
        )
    return f"{circuit.model}: the induction circuit from the weights. " + " ".join(lines)


def circuits_section(
    result: Circuits, circuit: InductionCircuit | None = None
) -> tuple[list, Files]:
    """The page items and figures of a circuits result (and its induction circuit, if read)."""
    pngs: dict[str, bytes] = {}
    items: list = []
    if result.n_layers > 1:
        for kind in ("q", "k", "v"):
            pngs[f"composition_{kind}.png"] = figure_png(plot_composition(result, kind))
        items.append(
            (circuits_caption(result), image_html(pngs["composition_k.png"], "K-composition"))
        )
        items.append(
            (
                "The strongest composition between each pair of layers (hover a cell).",
                layer_pairs_html(result, "k"),
            )
        )
    pngs["copying.png"] = figure_png(plot_copying(result))
    items.append((copying_caption(result), image_html(pngs["copying.png"], "copying scores")))
    items.append(("", circuits_html(result)))
    if circuit is not None:
        pngs["induction_circuit.png"] = figure_png(plot_induction_circuit(circuit))
        items.append(
            (
                induction_circuit_caption(circuit),
                image_html(pngs["induction_circuit.png"], "induction circuit"),
            )
        )
    if result.positional_qk is not None:
        pngs["positional_qk.png"] = figure_png(plot_positional_qk(result))
        items.append(
            (
                f"Positional QK: {result.positional_qk_note}",
                image_html(pngs["positional_qk.png"], "positional QK"),
            )
        )
    return items, dict(pngs)


def circuits_files(result: Circuits, top: int = 10) -> Files:
    """circuits.json (with the `top` strongest compositions of each kind listed),
    composition_{q,k,v}.png (more than one layer), copying.png, circuits.html."""

    items, files = circuits_section(result)
    files.pop("positional_qk.png", None)  # shown inline in circuits.html
    files["circuits.json"] = json_text(result.to_json(top))
    files["circuits.html"] = render_page(items, title=f"{result.model}: circuits from the weights")
    return declared(files, circuits_file_names(result.n_layers))

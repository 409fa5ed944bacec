"""Attention patterns, presented: the interactive view (circuitsvis), the static figure, and the
files of `mechlab attention`."""

import math
import warnings

import numpy as np

from mechlab.analysis.attention import HeadPatterns
from mechlab.errors import MechlabWarning
from mechlab.io import figure_png
from mechlab.labels import head_label
from mechlab.present.figure import Figure, new_figure, plain, short
from mechlab.present.page import Files, View, declared


def patterns_view(patterns: HeadPatterns, *, caption: str | None = None) -> View:
    """Heads' attention patterns as circuitsvis's AttentionHeads component, heads named L18H6.
    When only the last tokens were kept, the view says so (and warns)."""
    notes = []
    if patterns.n_tokens > len(patterns.tokens):
        notes.append(
            f"showing the last {len(patterns.tokens)} of {patterns.n_tokens} tokens (queries and "
            "keys); attention to earlier keys is not drawn"
        )
        warnings.warn(f"attention view: {notes[-1]}", MechlabWarning, stacklevel=3)
    names = [head_label(layer, head) for layer, head in patterns.heads]
    if caption is None:
        caption = (
            f"{patterns.model}: attention patterns of {', '.join(names)}. Each row is a query "
            "token, each column a key token it can attend to; hover a head to enlarge it."
        )
    props = {
        "attention": [
            [[round(x, 5) for x in row] for row in head] for head in patterns.pattern.tolist()
        ],
        "tokens": patterns.tokens,
        "attentionHeadNames": names,
        "maskUpperTri": True,
    }
    return View("AttentionHeads", props, caption, notes)


def plot_patterns(patterns: HeadPatterns) -> Figure:
    """A grid of heads' patterns (rows: query tokens, columns: key tokens)."""
    labels = [short(t) for t in patterns.tokens]
    heads = patterns.heads
    n_cols = min(4, len(heads))
    n_rows = math.ceil(len(heads) / n_cols)
    side = 2.2 + 0.12 * min(len(labels), 40)
    figure = new_figure(figsize=(side * n_cols, side * n_rows))
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    step = max(1, len(labels) // 40)  # at most about 40 labels per axis stay readable
    # the grid has room for more axes than heads: the spare ones are switched off below
    for ax, (layer, head), pattern in zip(axes.flat, heads, patterns.pattern.numpy(), strict=False):
        ax.imshow(pattern, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(head_label(layer, head))
        ticks = np.arange(0, len(labels), step)
        ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=7)
        ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=7)
    for ax in list(axes.flat)[len(heads) :]:
        ax.axis("off")
    layers = sorted({layer for layer, _ in heads})
    where = f"layer {layers[0]}" if len(layers) == 1 else f"layers {', '.join(map(str, layers))}"
    if patterns.n_tokens > len(patterns.tokens):
        where += f", the last {len(patterns.tokens)} of {patterns.n_tokens} tokens"
    figure.suptitle(f"{plain(patterns.model)}: {where} attention (row = query, column = key)")
    figure.tight_layout()
    return figure


def attention_file_names(layers: list[int]) -> list[str]:
    """The files attention_files writes for these layers: the CLI checks these before any work."""
    return ["attention.html"] + [f"attention_L{layer}.png" for layer in layers]


def attention_files(model_name: str, layers: list) -> Files:
    """attention.html with one view per layer, and attention_L{layer}.png for each (`layers`: one
    HeadPatterns per layer, in order)."""
    from mechlab.present.page import render_page

    files: Files = {
        "attention.html": render_page(
            [patterns_view(patterns) for patterns in layers],
            title=f"{model_name}: attention patterns",
        )
    }
    for patterns in layers:
        layer = patterns.heads[0][0]
        files[f"attention_L{layer}.png"] = figure_png(plot_patterns(patterns))
    return declared(files, attention_file_names([patterns.heads[0][0] for patterns in layers]))

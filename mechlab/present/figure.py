"""Static figures (matplotlib) made from result objects, the machinery they share.

Figures are returned, never shown or saved here (mechlab.io.figure_png renders them). They are made
as `Figure` objects directly, never through pyplot: the user's backend is left alone, no figure
stays open in pyplot's registry (so `%matplotlib inline` does not show it a second time), and a
returned figure displays once in Jupyter or VS Code through its own `_repr_png_`.
Every text that comes from outside (model names, tokens) is shown as plain text, never mathtext."""

from typing import Any

import matplotlib
import matplotlib.figure
import numpy as np
from matplotlib.axes import Axes
from matplotlib.image import AxesImage


class Figure(matplotlib.figure.Figure):
    """A matplotlib Figure that shows itself as a PNG in notebooks, whatever the backend."""

    def _repr_png_(self) -> bytes:
        from mechlab.io import figure_png

        return figure_png(self)


def new_figure(**kwargs: Any) -> Figure:
    return Figure(**kwargs)


def plain(text: str) -> str:
    """Text as matplotlib shows it literally: '$' would start mathtext."""
    return str(text).replace("$", r"\$")


def short(token: str, width: int = 10) -> str:
    """A token as a readable tick label: whitespace made visible, long tokens trimmed."""
    text = token.replace("\n", "\\n").replace("\t", "\\t")
    text = "".join(
        c if c.isprintable() else f"\\x{ord(c):02x}" for c in text
    )  # no glyph for controls
    text = plain(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _diverging(
    ax: Axes, figure: Figure, values: np.ndarray, limit: float | None = None
) -> AxesImage:
    """A heatmap on a diverging colour map centred on 0 (red up, blue down)."""
    limit = limit or max(float(np.abs(values).max()), 1e-6)
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    figure.colorbar(image, ax=ax, fraction=0.04)
    return image


def plot_layer_heads(values: np.ndarray, title: str, *, low: float, high: float) -> Figure:
    """A layers x heads heatmap of one value per head, each cell labelled when they fit."""
    n_layers, n_heads = values.shape
    figure = new_figure(figsize=(1.2 + 0.55 * n_heads, 1.2 + 0.32 * n_layers))
    ax = figure.subplots()
    cmap = "RdBu_r" if low < 0 else "Blues"
    image = ax.imshow(values, cmap=cmap, vmin=low, vmax=high, aspect="auto")
    if n_layers * n_heads <= 600:
        for layer in range(n_layers):
            for head in range(n_heads):
                value = values[layer, head]
                ax.text(
                    head,
                    layer,
                    f"{value:.2f}"[1:] if 0 <= value < 1 else f"{value:.1f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if abs(value) > 0.6 * max(abs(low), high) else "black",
                )
    ax.set_xticks(range(n_heads), [f"H{h}" for h in range(n_heads)], fontsize=7)
    ax.set_yticks(range(n_layers), [f"L{layer}" for layer in range(n_layers)], fontsize=7)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    figure.colorbar(image, ax=ax, fraction=0.05)
    figure.tight_layout()
    return figure

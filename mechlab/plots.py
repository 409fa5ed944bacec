"""Static figures (matplotlib) made from models and result objects, for papers and READMEs.
Figures are returned, never shown or saved here: mechlab.io.save_figure writes them."""

import math

import matplotlib

matplotlib.use("Agg")  # no display needed; notebooks still show returned figures inline
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from transformer_lens import HookedTransformer  # noqa: E402

from mechlab.tokens import PromptOrTokens, to_tokens, token_strings  # noqa: E402
from mechlab.views import attention_patterns, check_head, check_layer  # noqa: E402


def short(token: str, width: int = 10) -> str:
    """A token as a readable tick label: whitespace made visible, long tokens trimmed."""
    text = token.replace("\n", "\\n").replace("\t", "\\t")
    text = text.replace("$", r"\$")  # matplotlib would read $...$ as mathtext
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_attention(
    model: HookedTransformer, prompt_or_tokens: PromptOrTokens, *, layer: int, heads: list[int] | None = None
) -> Figure:
    """A grid of one layer's head patterns (rows: query tokens, columns: key tokens)."""
    check_layer(model, layer)
    heads = list(range(model.cfg.n_heads)) if heads is None else list(heads)
    for head in heads:
        check_head(model, layer, head)
    tokens = to_tokens(model, prompt_or_tokens)[:1]
    pattern = attention_patterns(model, tokens, [layer])[layer].numpy()
    labels = [short(t) for t in token_strings(model, tokens[0])]
    n_cols = min(4, len(heads))
    n_rows = math.ceil(len(heads) / n_cols)
    side = 2.2 + 0.12 * min(len(labels), 40)
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(side * n_cols, side * n_rows), squeeze=False)
    step = max(1, len(labels) // 40)  # at most about 40 labels per axis stay readable
    for ax, head in zip(axes.flat, heads):
        ax.imshow(pattern[head], cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"L{layer}H{head}")
        ticks = np.arange(0, len(labels), step)
        ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=7)
        ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=7)
    for ax in list(axes.flat)[len(heads):]:
        ax.axis("off")
    figure.suptitle(f"{model.cfg.model_name}: layer {layer} attention (row = query, column = key)")
    figure.tight_layout()
    return figure

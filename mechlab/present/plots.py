"""Static figures (matplotlib) made from models and result objects, for papers and READMEs.

Figures are returned, never shown or saved here (mechlab.io.figure_png renders them). They are made
as `Figure` objects directly, never through pyplot: the user's backend is left alone, no figure
stays open in pyplot's registry (so `%matplotlib inline` does not show it a second time), and a
returned figure displays once in Jupyter or VS Code through its own `_repr_png_`.
Every text that comes from outside (model names, tokens) is shown as plain text, never mathtext.
"""

import math

import matplotlib
import matplotlib.figure
import numpy as np

from mechlab.analysis.attention import HeadPatterns
from mechlab.labels import head_label, heads_label
from mechlab.moved import moved_names


class Figure(matplotlib.figure.Figure):
    """A matplotlib Figure that shows itself as a PNG in notebooks, whatever the backend."""

    def _repr_png_(self) -> bytes:
        from mechlab.io import figure_png

        return figure_png(self)


def new_figure(**kwargs) -> Figure:
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


# --------------------------------------------------------------------------------------------------
# Head scan


SCORE_TITLES = {
    "induction": "induction: attention to the token after the earlier copy",
    "previous_token": "previous-token: attention to position - 1",
    "duplicate_token": "duplicate-token: attention to the earlier copy",
    "current_token": "current-token: attention to itself",
    "first_token": "first-token: attention to BOS",
    "copying": "copying: OV-circuit eigenvalues, sum(l) / sum(|l|)",
}


def plot_head_scores(scan, name: str) -> Figure:
    """A layers x heads heatmap of one score, each cell labelled with its value when they fit."""
    return plot_layer_heads(
        scan.score(name).numpy(),
        f"{plain(scan.model)}\n{SCORE_TITLES.get(name, name)}",
        low=-1.0 if name == "copying" else 0.0,
        high=1.0,
    )


def plot_loss_by_position(scan) -> Figure:
    """Next-token loss along [BOS] + r + r: high on the random first copy, low on the repeat once
    induction heads can copy from the first copy."""
    loss = scan.loss_by_position.numpy()
    figure = new_figure(figsize=(8, 3.5))
    ax = figure.subplots()
    ax.plot(np.arange(len(loss)), loss, color="#1f4e99")
    ax.axvline(scan.seq_len - 0.5, color="gray", linestyle="--")
    ax.text(scan.seq_len, loss.max(), " second copy starts", va="top", fontsize=8, color="gray")
    for start, stop, value in [
        (0, scan.seq_len, scan.loss_first_half),
        (scan.seq_len, len(loss), scan.loss_second_half),
    ]:
        ax.hlines(value, start, stop - 1, color="#d95f02", linewidth=1)
        ax.text(
            stop - 1,
            value,
            f" mean {value:.2f}",
            fontsize=8,
            color="#d95f02",
            va="bottom",
            ha="right",
        )
    ax.set_xlabel("position (predicting the next token)")
    ax.set_ylabel("loss (nats)")
    ax.set_title(
        f"{plain(scan.model)}: in-context loss on repeated random tokens (seq_len={scan.seq_len}, "
        f"batch={scan.batch})",
        fontsize=9,
    )
    figure.tight_layout()
    return figure


def plot_induction_mosaic(scans: list) -> Figure:
    """Induction scores of several models side by side, each on a 0..1 depth axis so models with
    different numbers of layers line up (after the induction mosaic of Olsson et al.)."""
    figure = new_figure(figsize=(2.2 * len(scans) + 1, 5))
    axes = figure.subplots(1, len(scans), squeeze=False)
    for ax, scan in zip(axes[0], scans, strict=True):
        values = scan.score("induction").numpy()
        image = ax.imshow(
            values,
            cmap="Blues",
            vmin=0,
            vmax=1,
            aspect="auto",
            extent=(-0.5, scan.n_heads - 0.5, 1, 0),
        )
        ax.set_title(f"{plain(scan.model)}\n{scan.n_layers} layers", fontsize=8)
        ax.set_xlabel("head", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("relative depth (0 = first layer, 1 = last)")
    figure.colorbar(image, ax=list(axes[0]), fraction=0.03)
    figure.suptitle("induction score by relative depth")
    return figure


# --------------------------------------------------------------------------------------------------
# Logit lens (nostalgebraist's three heatmaps)


def _lens_axes(result, values: np.ndarray, title: str, **imshow):
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


def plot_lens_top1(result) -> Figure:
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


def plot_lens_rank(result) -> Figure:
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


def plot_lens_kl(result) -> Figure:
    """KL(output distribution || this layer's decoding), in nats."""
    kl = result.kl_to_final.numpy()
    figure, _ = _lens_axes(result, kl, "KL(final || layer) in nats", cmap="magma_r", vmin=0)
    figure.tight_layout()
    return figure


def plot_lens_curves(curves) -> Figure:
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


# --------------------------------------------------------------------------------------------------
# Causal checks


def _diverging(ax, figure, values: np.ndarray, limit: float | None = None):
    """A heatmap on a diverging colour map centred on 0 (red up, blue down)."""
    limit = limit or max(float(np.abs(values).max()), 1e-6)
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    figure.colorbar(image, ax=ax, fraction=0.04)
    return image


def plot_patch_grid(result) -> Figure:
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


def plot_ablation(study) -> Figure:
    """Loss along [BOS] + r + r: clean, with the top induction heads ablated together, and with as
    many non-induction heads of the same layers ablated (the control)."""

    joint, control = study.joint, study.control
    figure = new_figure(figsize=(8, 3.8))
    ax = figure.subplots()
    x = np.arange(len(joint.loss_by_position))
    for loss, label, colour in [
        (joint.clean_loss_by_position, "clean", "#444444"),
        (joint.loss_by_position, f"ablated: {heads_label(joint.heads)}", "#d62728"),
        (control.loss_by_position, f"control: {heads_label(control.heads)}", "#1f77b4"),
    ]:
        ax.plot(x, loss.numpy(), label=label, color=colour, linewidth=1.2)
    ax.axvline(joint.seq_len - 0.5, color="gray", linestyle="--")
    ax.text(joint.seq_len, ax.get_ylim()[1], " second copy starts", va="top", fontsize=8)
    ax.set_xlabel("position (predicting the next token)")
    ax.set_ylabel("loss (nats)")
    ax.set_title(
        f"{plain(joint.model)}: {joint.method}-ablating the top induction heads; second-half loss "
        f"{joint.clean_loss_second_half:.2f} -> {joint.loss_second_half:.2f} "
        f"(control {control.loss_second_half:.2f})",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    return figure


def plot_dla_heads(result) -> Figure:
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


def plot_dla_layers(result) -> Figure:
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


# --------------------------------------------------------------------------------------------------
# Induction heads forming during training


def plot_formation(formation, threshold: float = 0.4) -> Figure:
    """Left: training loss and the held-out losses on repeated tokens and on their first
    occurrences against the step; middle: the highest induction score of any head; right: read
    from the weights, the K-composition into the final induction head from its strongest
    earlier head, against the random baseline. Both models; the step where the score first
    crosses `threshold` (the phase change) is marked."""
    from mechlab.labels import head_label

    figure = new_figure(figsize=(17, 4))
    loss_ax, score_ax, composition_ax = figure.subplots(1, 3)
    colours = ["#d62728", "#1f77b4", "#2ca02c"]
    for run, colour in zip(formation.runs, colours, strict=False):  # at most three runs
        steps = [c.step for c in run.checkpoints]
        loss_ax.plot(
            steps,
            [c.loss for c in run.checkpoints],
            color=colour,
            label=f"{run.name}: training loss",
        )
        loss_ax.plot(
            steps,
            [c.repeat_loss for c in run.checkpoints],
            color=colour,
            linestyle="--",
            label=f"{run.name}: loss on repeated tokens (held out)",
        )
        loss_ax.plot(
            steps,
            [c.first_loss for c in run.checkpoints],
            color=colour,
            linestyle=":",
            label=f"{run.name}: loss on their first occurrences",
        )
        score_ax.plot(
            steps, [c.max_induction for c in run.checkpoints], color=colour, label=run.name
        )
        phase = run.phase_change_step(threshold)
        if phase is not None:
            for ax in (loss_ax, score_ax, composition_ax):
                ax.axvline(phase, color=colour, linestyle=":", linewidth=1)
            score_ax.text(phase, threshold, f" step {phase}", color=colour, fontsize=8, va="bottom")
        last = run.checkpoints[-1] if run.checkpoints else None
        if last is None or run.n_layers < 2 or not last.k_composition:
            continue
        induction = np.array(last.induction)
        induction[0] = -1  # an induction head needs an earlier layer to compose with
        layer, head = divmod(int(induction.argmax()), run.n_heads)
        composer = last.k_composer[layer][head]
        composition_ax.plot(
            steps,
            [c.k_composition[layer][head] for c in run.checkpoints],
            color=colour,
            label=f"{run.name}: into {head_label(layer, head)} (final strongest: "
            f"{head_label(*composer)})",
        )
        if run.composition_baseline:
            composition_ax.axhline(
                run.composition_baseline["p95"],
                color=colour,
                linestyle="--",
                linewidth=0.8,
                label="random circuits: 95th percentile",
            )
    score_ax.axhline(threshold, color="gray", linewidth=0.8)
    score_ax.set_ylim(0, 1)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss (nats)")
    loss_ax.legend(fontsize=7)
    loss_ax.set_title("loss", fontsize=9)
    score_ax.set_xlabel("step")
    score_ax.set_ylabel("highest induction score of any head")
    score_ax.set_title(f"induction score (phase change: first crossing of {threshold})", fontsize=9)
    score_ax.legend(fontsize=7)
    composition_ax.set_xlabel("step")
    composition_ax.set_ylabel("strongest K-composition into the induction head")
    composition_ax.set_title(
        "from the weights: the induction head's keys read an earlier head", fontsize=9
    )
    composition_ax.set_ylim(bottom=0)
    composition_ax.legend(fontsize=7)
    figure.suptitle("induction heads forming in attention-only models trained from scratch")
    figure.tight_layout()
    return figure


def plot_tuned_vs_logit(evaluation) -> Figure:
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


# --------------------------------------------------------------------------------------------------
# Token attribution


def plot_attribution(results: list) -> Figure:
    """Tokens x methods: each method's scores scaled to its own largest |score| (methods have
    different units), on a diverging map centred on 0 (red: supports the answer)."""
    first = results[0]
    values = np.stack(
        [result.scores.numpy() / max(float(result.ranked.abs().max()), 1e-12) for result in results]
    )
    if first.kept_bos:
        values[:, 0] = 0.0  # the baseline keeps BOS: not ranked, drawn blank
    n_methods, pos = values.shape
    figure = new_figure(figsize=(max(6.0, 1.5 + 0.45 * pos), 1.4 + 0.45 * n_methods))
    ax = figure.subplots()
    _diverging(ax, figure, values, 1.0)
    ax.set_xticks(range(pos), [short(t) for t in first.tokens], rotation=90, fontsize=7)
    ax.set_yticks(range(n_methods), [plain(r.method) for r in results], fontsize=7)
    ax.set_title(
        f"{plain(first.model)}: token attribution of {plain(first.what)} = {first.target:.2f}\n"
        "(each row scaled to its largest |score|)",
        fontsize=9,
    )
    figure.tight_layout()
    return figure


def plot_randomization(checks: list) -> Figure:
    """Cascading randomization: per method, the rank correlation with the trained model's
    attribution as more of the model is re-initialised from the top."""
    figure = new_figure(figsize=(8, 4))
    ax = figure.subplots()
    for check in checks:
        ax.plot(range(len(check.stages)), check.correlations, marker=".", label=plain(check.method))
    stages = checks[0].stages
    ax.axhline(checks[0].threshold, color="gray", linestyle="--", linewidth=0.8)
    ax.text(0, checks[0].threshold, " pass threshold", va="bottom", fontsize=7, color="gray")
    step = max(1, len(stages) // 16)
    ax.set_xticks(range(0, len(stages), step), [plain(s) for s in stages[::step]], fontsize=7)
    ax.set_xlabel("randomized down to (from the top)")
    ax.set_ylabel("Spearman correlation of |scores|")
    ax.set_ylim(-1.05, 1.05)
    ax.set_title(
        f"{plain(checks[0].model)}: model-parameter randomization (Adebayo et al. 2018)", fontsize=9
    )
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------------------------------
# Circuits from the weights


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


# --------------------------------------------------------------------------------------------------
# Grokking


def plot_grokking(run) -> Figure:
    """One figure, the step axis shared: train and test loss (log scale); the restricted and
    excluded losses (Nanda et al. 2023's progress measures); accuracies; the weight norm; each
    frequency's share of the embedding across training, with the final spectrum beside it (the key
    frequencies marked)."""
    figure = new_figure(figsize=(11, 13))
    grid = figure.add_gridspec(5, 2, width_ratios=[5, 1], height_ratios=[1, 1, 0.7, 0.7, 1.3])
    loss_ax = figure.add_subplot(grid[0, 0])
    measures_ax = figure.add_subplot(grid[1, 0], sharex=loss_ax)
    accuracy_ax = figure.add_subplot(grid[2, 0], sharex=loss_ax)
    norm_ax = figure.add_subplot(grid[3, 0], sharex=loss_ax)
    spectrum_ax = figure.add_subplot(grid[4, 0], sharex=loss_ax)
    final_ax = figure.add_subplot(grid[4, 1], sharey=spectrum_ax)
    steps = np.array(run.steps)
    loss_ax.plot(steps, run.train_loss, color="#1f77b4", label="train loss")
    loss_ax.plot(steps, run.test_loss, color="#d62728", label="test loss")
    measures_ax.plot(steps, run.test_loss, color="#d62728", alpha=0.3, label="test loss")
    measures_ax.plot(
        steps, run.restricted_loss, color="#2ca02c", label="restricted loss (key frequencies only)"
    )
    measures_ax.plot(
        steps, run.excluded_loss, color="#9467bd", label="excluded loss (key frequencies removed)"
    )
    for ax in (loss_ax, measures_ax):
        ax.set_yscale("log")
        ax.set_ylabel("loss (nats)")
        ax.legend(fontsize=7, loc="lower left")
    accuracy_ax.plot(steps, run.train_accuracy, color="#1f77b4", label="train")
    accuracy_ax.plot(steps, run.test_accuracy, color="#d62728", label="test")
    accuracy_ax.set_ylim(0, 1.02)
    accuracy_ax.set_ylabel("accuracy")
    accuracy_ax.legend(fontsize=7, loc="lower right")
    norm_ax.plot(steps, run.weight_norm, color="black")
    norm_ax.set_ylabel("weight norm")
    for name, step, colour in [
        ("memorised", run.memorise_step, "#1f77b4"),
        ("grokked", run.grok_step, "#d62728"),
    ]:
        if step is None:
            continue
        for ax in (loss_ax, measures_ax, accuracy_ax, norm_ax):
            ax.axvline(step, color=colour, linestyle=":", linewidth=1)
        loss_ax.text(step, loss_ax.get_ylim()[1], f" {name}\n step {step}", color=colour,
                     fontsize=7, va="top")  # fmt: skip
    shares = np.array(run.frequency_shares).T  # [frequency, checkpoint]
    n_frequencies = shares.shape[0]
    spectrum_ax.imshow(
        shares,
        aspect="auto",
        origin="lower",
        cmap="Greys",
        extent=(steps[0], steps[-1], 0.5, n_frequencies + 0.5),
        interpolation="nearest",
    )
    spectrum_ax.set_ylabel("frequency k")
    spectrum_ax.set_xlabel("step")
    spectrum_ax.set_title("each frequency's share of the embedding (dark = large)", fontsize=8)
    final = shares[:, -1]
    keys = set(run.key_frequencies)
    final_ax.barh(
        np.arange(1, n_frequencies + 1),
        final,
        color=["#d62728" if k in keys else "#999999" for k in range(1, n_frequencies + 1)],
    )
    final_ax.set_xlabel("share at the end")
    final_ax.set_title("key: red", fontsize=8)
    final_ax.tick_params(labelleft=False)
    figure.suptitle(
        f"grokking (a + b) mod {run.p}, {run.fraction:.0%} of pairs trained on, seed {run.seed}; "
        f"key frequencies {run.key_frequencies}"
    )
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------------------------------
# Features: neurons and sparse-autoencoder latents


def plot_histogram(edges: np.ndarray, counts: np.ndarray, title: str) -> Figure:
    """Counts per bin (log scale), bins given by their edges."""
    figure = new_figure(figsize=(7, 2.8))
    ax = figure.subplots()
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4c72b0")
    ax.set_yscale("log")
    ax.axvline(0, color="gray", linewidth=0.8)
    ax.set_xlabel("activation")
    ax.set_ylabel("tokens")
    ax.set_title(plain(title), fontsize=9)
    figure.tight_layout()
    return figure


# moved to mechlab.present.circuits (the old paths still work)
__getattr__ = moved_names(
    __name__,
    dict.fromkeys(
        ["plot_composition", "plot_copying", "plot_induction_circuit", "plot_positional_qk"],
        "mechlab.present.circuits",
    ),
)

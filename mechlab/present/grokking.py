"""Grokking, presented: the losses, accuracies and progress measures over training, the page's
table, and the files of `mechlab train-grokking`."""

import numpy as np

from mechlab.io import figure_png, json_text
from mechlab.present.figure import Figure, new_figure
from mechlab.present.page import Files, declared, image_html
from mechlab.scratch.grokking import GrokkingRun


def plot_grokking(run: GrokkingRun) -> Figure:
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


GROKKING_FILES = ["grokking.json", "grokking.png", "grokking.html"]


def grokking_caption(run: GrokkingRun) -> str:
    if run.memorise_step is None:
        story = "The training pairs were never all answered correctly."
    elif run.grok_step is None:
        story = (
            f"Every training pair was answered correctly from step {run.memorise_step}; the "
            "held-out pairs never reached 99%."
        )
    else:
        story = (
            f"Every training pair was answered correctly from step {run.memorise_step}; 99% of "
            f"the held-out pairs only from step {run.grok_step}, "
            f"{run.grok_step - run.memorise_step} steps later."
        )
    return (
        f"(a + b) mod {run.p}, a one-layer Transformer trained from scratch on {run.fraction:.0%} "
        f"of the pairs. {story} Key frequencies (from the final embedding): "
        f"{run.key_frequencies}. The restricted loss keeps only the logits' components along "
        "cos(w(a+b)) and sin(w(a+b)) of those frequencies (all pairs); the excluded loss removes "
        "them (training pairs): Nanda et al. (2023)'s progress measures."
    )


def grokking_table_html(run: GrokkingRun, rows: int = 12) -> str:
    """The checkpoints as a table readable without scripts (about `rows` of them, evenly spaced)."""
    every = max(1, len(run.steps) // rows)
    chosen = sorted(set(range(0, len(run.steps), every)) | {len(run.steps) - 1})
    names: list[tuple[str, str, list]] = [
        ("step", "{:d}", run.steps),
        ("train loss", "{:.3g}", run.train_loss),
        ("test loss", "{:.3g}", run.test_loss),
        ("train acc", "{:.3f}", run.train_accuracy),
        ("test acc", "{:.3f}", run.test_accuracy),
        ("restricted", "{:.3g}", run.restricted_loss),
        ("excluded", "{:.3g}", run.excluded_loss),
        ("weight norm", "{:.1f}", run.weight_norm),
    ]
    head = "".join(f"<th>{name}</th>" for name, _, _ in names)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt.format(values[i])}</td>" for _, fmt, values in names) + "</tr>"
        for i in chosen
    )
    return f'<table style="font-family: monospace; font-size: 11px"><tr>{head}</tr>{body}</table>'


def grokking_files(run: GrokkingRun) -> Files:
    """grokking.json (every field), grokking.png and grokking.html."""
    from mechlab.present.page import render_page

    png = figure_png(plot_grokking(run))
    files: Files = {
        "grokking.json": json_text(run.to_json()),
        "grokking.png": png,
        "grokking.html": render_page(
            [(grokking_caption(run), image_html(png, "grokking")), ("", grokking_table_html(run))],
            title=f"grokking (a + b) mod {run.p}",
        ),
    }
    return declared(files, GROKKING_FILES)

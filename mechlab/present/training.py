"""Induction heads forming in training, presented: the scores over steps, and the files of
`mechlab train-induction`."""

import numpy as np

from mechlab.io import figure_png, json_text
from mechlab.labels import head_label
from mechlab.present.figure import Figure, new_figure
from mechlab.present.page import Files, declared
from mechlab.scratch.training import Formation


def plot_formation(formation: Formation, threshold: float = 0.4) -> Figure:
    """Left: training loss and the held-out losses on repeated tokens and on their first
    occurrences against the step; middle: the highest induction score of any head; right: read
    from the weights, the K-composition into the final induction head from its strongest
    earlier head, against the random baseline. Both models; the step where the score first
    crosses `threshold` (the phase change) is marked."""

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
        if composer is None:
            continue
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


FORMATION_FILES = ["formation.json", "formation.png"]


def formation_files(formation: Formation) -> Files:
    """formation.json and formation.png."""

    files: Files = {
        "formation.json": json_text(formation.to_json()),
        "formation.png": figure_png(plot_formation(formation)),
    }
    return declared(files, FORMATION_FILES)

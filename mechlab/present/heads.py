"""The head scan and head ablation, presented: a heatmap per score, the loss by position, the mosaic
of several models, the induction views, the ablation's bars, tables, and the files of
`mechlab heads`."""

import html

import numpy as np
from rich.console import JustifyMethod
from rich.table import Table

from mechlab.analysis.ablation import AblationStudy
from mechlab.analysis.attention import HeadPatterns
from mechlab.analysis.heads import HeadScan
from mechlab.defaults import INDUCTION_THRESHOLD
from mechlab.io import figure_png, json_text
from mechlab.labels import head_label, heads_label, scored_heads_label
from mechlab.present.figure import Figure, new_figure, plain, plot_layer_heads
from mechlab.present.page import Files, declared, image_html, model_files
from mechlab.terminal import markup_safe

SCORE_TITLES = {
    "induction": "induction: attention to the token after the earlier copy",
    "previous_token": "previous-token: attention to position - 1",
    "duplicate_token": "duplicate-token: attention to the earlier copy",
    "current_token": "current-token: attention to itself",
    "first_token": "first-token: attention to BOS",
    "copying": "copying: OV-circuit eigenvalues, sum(l) / sum(|l|)",
}


def plot_head_scores(scan: HeadScan, name: str) -> Figure:
    """A layers x heads heatmap of one score, each cell labelled with its value when they fit."""
    return plot_layer_heads(
        scan.score(name).numpy(),
        f"{plain(scan.model)}\n{SCORE_TITLES.get(name, name)}",
        low=-1.0 if name == "copying" else 0.0,
        high=1.0,
    )


def plot_loss_by_position(scan: HeadScan) -> Figure:
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


def plot_ablation(study: AblationStudy) -> Figure:
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


def head_scan_html(scan: HeadScan, threshold: float | None = None) -> str:
    """Induction scores as a layers x heads table (heads above the threshold in bold), with the
    top heads of the other scores and the in-context loss."""
    from mechlab.defaults import INDUCTION_THRESHOLD

    threshold = INDUCTION_THRESHOLD if threshold is None else threshold
    values = scan.score("induction")
    head = "".join(f"<th>H{h}</th>" for h in range(scan.n_heads))
    rows = []
    for layer in range(scan.n_layers):
        cells = "".join(
            f"<td><b>{v:.2f}</b></td>" if v > threshold else f"<td>{v:.2f}</td>"
            for v in values[layer].tolist()
        )
        rows.append(f"<tr><th>L{layer}</th>{cells}</tr>")
    tops = "".join(
        f"<li>{name.replace('_', ' ')}: " + scored_heads_label(scan.top(name, 3)) + "</li>"
        for name in ["previous_token", "duplicate_token", "copying"]
    )
    return (
        f"<p>{html.escape(repr(scan))}; loss {scan.loss_first_half:.2f} on the first copy, "
        f"{scan.loss_second_half:.2f} on the repeat.</p><ul>{tops}</ul>"
        f"<p>Induction scores (bold: above {threshold}):</p>"
        f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>"
    )


def ablation_html(study: AblationStudy) -> str:
    """Each ablation of a study as a table row: which heads, the second-half loss, its rise."""

    rows = "".join(
        f"<tr><td>{row['kind']}</td><td>"
        + html.escape(heads_label(row["heads"]))
        + f"</td><td>{row['loss_second_half']:.3f}</td><td>{row['delta']:+.3f}</td></tr>"
        for row in study.to_json()
    )
    return (
        f"<p>{html.escape(repr(study))}</p><table><tr><th>ablated</th><th>heads</th>"
        f"<th>second-half loss</th><th>delta</th></tr>{rows}</table>"
    )


def heads_table(scan: HeadScan, threshold: float, k: int = 5) -> Table:
    """The top k heads for each main score, and which heads pass the induction threshold."""
    names = ["induction", "previous_token", "duplicate_token", "first_token", "copying"]
    table = Table(
        title=markup_safe(
            f"{scan.model}: top heads (seq_len={scan.seq_len}, batch={scan.batch}, "
            f"seed={scan.seed})"
        )
    )
    table.add_column("rank", justify="right")
    for name in names:
        table.add_column(name.replace("_", " "))
    tops = {name: scan.top(name, k) for name in names}
    for rank in range(min(k, scan.n_layers * scan.n_heads)):
        table.add_row(
            str(rank + 1),
            *[scored_heads_label([row]) for row in (tops[name][rank] for name in names)],
        )
    passing = scan.heads_above("induction", threshold)
    table.caption = markup_safe(
        f"induction heads above {threshold}: "
        + (heads_label(passing) if passing else "none")
        + f"; loss first half {scan.loss_first_half:.2f}, second half {scan.loss_second_half:.2f}"
    )
    return table


def ablation_table(study: AblationStudy) -> Table:
    """Each ablation's second-half loss and its rise over the clean run."""

    joint = study.joint
    table = Table(
        title=markup_safe(
            f"{joint.model}: {joint.method}-ablating the top induction heads (clean second-half "
            f"loss {joint.clean_loss_second_half:.3f} nats)"
        )
    )
    columns: list[tuple[str, JustifyMethod]] = [
        ("ablated", "left"),
        ("heads", "left"),
        ("loss", "right"),
        ("delta", "right"),
    ]
    for column, justify in columns:
        table.add_column(column, justify=justify)
    rows = study.to_json()
    for row in rows:
        heads = heads_label(row["heads"])
        table.add_row(
            row["kind"],
            markup_safe(heads),
            f"{row['loss_second_half']:.3f}",
            f"{row['delta']:+.3f}",
        )
    table.caption = "control: as many non-induction heads of the same layers, drawn at random"
    return table


HEAD_FIGURE_SCORES = [
    "induction",
    "previous_token",
    "duplicate_token",
    "current_token",
    "first_token",
    "copying",
]


def head_figures(scan: HeadScan, names: list[str] = HEAD_FIGURE_SCORES) -> dict[str, bytes]:
    """One heatmap per score and the loss along the repeated sequences, as PNG bytes."""

    figures = {f"heads_{name}.png": figure_png(plot_head_scores(scan, name)) for name in names}
    figures["loss_by_position.png"] = figure_png(plot_loss_by_position(scan))
    return figures


def induction_caption(scan: HeadScan, threshold: float = INDUCTION_THRESHOLD) -> str:
    found = scan.heads_above("induction", threshold)[:6]
    heads = (
        ", ".join(f"{head_label(layer, head)} ({score:.2f})" for layer, head, score in found)
        or f"none above {threshold}"
    )
    return (
        f"Induction scores of every head on [BOS] + r + r (len(r) = {scan.seq_len}, {scan.batch} "
        "sequences): the mean attention from the second copy to the token after the earlier copy. "
        f"Induction heads: {heads}."
    )


def loss_caption(scan: HeadScan) -> str:
    return (
        f"Next-token loss along the repeated sequences: {scan.loss_first_half:.2f} nats on the "
        f"random first copy, {scan.loss_second_half:.2f} on the repeat, which the induction heads "
        "make predictable."
    )


def induction_views(scan: HeadScan, patterns: list) -> list:
    """Attention views of the top induction heads and the top previous-token heads on one of the
    scan's sequences, the two halves of the induction circuit (`patterns`: their HeadPatterns, as
    mechlab.workflows.attention.induction_patterns computes them)."""
    from mechlab.present.attention import patterns_view

    induction, previous = patterns
    name = scan.model
    return [
        patterns_view(
            induction,
            caption=(
                f"{name}: the four heads with the highest induction scores "
                f"({heads_label(induction.heads)}), on one sequence [BOS] + r + r. In the second "
                "half an induction head attends along a stripe one position to the right of the "
                "earlier copy of the current token, and so predicts that the sequence repeats."
            ),
        ),
        patterns_view(
            previous,
            caption=(
                f"{name}: the three heads with the highest previous-token scores "
                f"({heads_label(previous.heads)}): each position attends to the one before it, "
                "which lets a later induction head find 'the token after the earlier copy'."
            ),
        ),
    ]


def heads_file_names(*, ablation: bool) -> list[str]:
    """The files heads_files writes for one model: the CLI checks these before any work."""
    figures = [f"heads_{name}.png" for name in HEAD_FIGURE_SCORES] + ["loss_by_position.png"]
    return [*figures, "heads.json", "heads.html"] + (["ablation.png"] if ablation else [])


def heads_files(
    scan: HeadScan,
    patterns: list[HeadPatterns],
    threshold: float = INDUCTION_THRESHOLD,
    study: AblationStudy | None = None,
) -> Files:
    """heads.json, a heatmap per score, loss_by_position.png and heads.html (attention views of
    `patterns`, see induction_views); with an ablation `study`, also ablation.png and heads.json's
    "ablation" list."""
    from mechlab.present.page import render_page

    files: Files = dict(head_figures(scan))
    report = scan.to_json(threshold)
    items = induction_views(scan, patterns)
    if study is not None:
        report["ablation"] = study.to_json()
        files["ablation.png"] = png = figure_png(plot_ablation(study))
        items.append((ablation_caption(study), image_html(png, "ablation")))
    files["heads.json"] = json_text(report)
    files["heads.html"] = render_page(
        items, title=f"{scan.model}: induction and previous-token heads"
    )
    return declared(files, heads_file_names(ablation=study is not None))


def scan_file_names(specs: list[str], *, ablation: bool, several: bool | None = None) -> list[str]:
    """The files `mechlab heads` writes for these models: each model's (heads_file_names) under
    its own directory and a mosaic when there are several."""
    from mechlab.io import model_slug

    several = len(specs) > 1 if several is None else several
    own = heads_file_names(ablation=ablation)
    names = [f"{model_slug(spec)}/{name}" if several else name for spec in specs for name in own]
    return names + (["induction_mosaic.png"] if several else [])


def scan_files(results: list, *, several: bool) -> Files:
    """Every scanned model's files (each ModelScan's `files`, see heads_files) and, for several
    models, induction_mosaic.png (scan_file_names)."""
    files: Files = {}
    for result in results:
        files.update(model_files(result.spec, result.files, several=several))
    if several:
        files["induction_mosaic.png"] = mosaic_png([result.scan for result in results])
    ablation = any(result.study is not None for result in results)
    specs = [result.spec for result in results]
    return declared(files, scan_file_names(specs, ablation=ablation, several=several))


def mosaic_png(scans: list[HeadScan]) -> bytes:

    return figure_png(plot_induction_mosaic(scans))


def ablation_caption(study: AblationStudy) -> str:
    joint, control = study.joint, study.control
    return (
        f"{joint.model}: the loss along [BOS] + r + r with the top induction heads "
        f"({heads_label(joint.heads)}) {joint.method}-ablated together: the second-half loss rises "
        f"by {joint.delta_second_half:+.2f} nats, against {control.delta_second_half:+.2f} for "
        f"as many non-induction heads of the same layers ({heads_label(control.heads)})."
        + (
            " The model needs its induction heads to predict the repeat."
            if joint.delta_second_half > max(3 * control.delta_second_half, 0.5)
            else ""
        )
    )

"""Token attribution, presented: tokens x methods as a heatmap and as shaded text, the randomization
curves, and the files of `mechlab attribute` (and the report's section)."""

import html

import numpy as np

from mechlab.io import figure_png, json_text
from mechlab.present.figure import Figure, _diverging, new_figure, plain, short
from mechlab.present.page import Files, declared, diverging_colour, image_html, visible_token


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


def attribution_html(results: list) -> str:
    """Token attributions as a table readable without scripts: one row per method, the prompt's
    tokens shaded by score (red supports the answer, blue opposes it; each row scaled to its own
    largest |score|, since methods have different units), hover a token for its value."""
    first = results[0]
    rows = []
    for result in results:
        limit = max(float(result.ranked.abs().max()), 1e-12)
        cells = []
        for position, (token, score) in enumerate(
            zip(result.tokens, result.scores.tolist(), strict=True)
        ):
            kept = result.kept_bos and position == 0
            colour = "#eeeeee" if kept else diverging_colour(score, limit)
            tip = f"{position}: {token!r} {score:+.4g}" + (
                " (BOS, kept by the baseline)" if kept else ""
            )
            cells.append(
                f'<span style="background:{colour}; white-space:pre; padding:0 1px" '
                f'title="{html.escape(tip)}">{html.escape(visible_token(token))}</span>'
            )
        extra = ""
        if result.relative_delta is not None:
            extra = f" (completeness gap {result.relative_delta:.1%})"
        rows.append(
            f"<tr><th style='text-align:left'>{html.escape(result.method)}"
            f"{html.escape(extra)}</th><td>{''.join(cells)}</td></tr>"
        )
    return (
        f"<p>{html.escape(first.model)}: attribution of {html.escape(first.what)} = "
        f"{first.target:.3f} at the last position to each token of the prompt.</p>"
        f'<table class="mechlab-attribution" style="font-family: monospace; font-size: 13px">'
        f"{''.join(rows)}</table>"
    )


def attribution_caption(results: list) -> str:
    first = results[0]
    return (
        f"{first.model}: which tokens of {first.prompt!r} drive {first.what} = {first.target:.3f} "
        "at the last position, by each method (red: raises it, blue: lowers it; each row scaled "
        "to its own largest |score|; hover a token for its value). Positional embeddings are not "
        f"attributed.{completeness_sentence(results)}"
    )


def completeness_sentence(results: list) -> str:
    """How well integrated gradients add up, when they are among `results`."""
    for result in results:
        if result.relative_delta is not None and result.method == "integrated_gradients":
            return (
                f" Integrated gradients from the {result.baseline!r} baseline ({result.steps} "
                f"steps) sum to {result.target - result.baseline_target + result.delta:.3f} of "
                f"target - baseline target = {result.target - result.baseline_target:.3f}: "
                f"{result.relative_delta:.2%} off."
            )
    return ""


def randomization_caption(checks: list) -> str:
    verdicts = ", ".join(
        f"{c.method} {c.above_embeddings:+.2f} ({'passes' if c.passes else 'fails'})"
        for c in checks
    )
    return (
        "Model-parameter randomization: the weights re-initialised from the top down, the "
        "attribution recomputed, its rank correlation with the trained model's. A method that "
        f"explains the model falls below {checks[0].threshold} once every block is random: "
        f"{verdicts}."
    )


def attribution_json(results: list, checks: list | None = None) -> dict:
    first = results[0]
    data = {
        "model": first.model,
        "prompt": first.prompt,
        "answer": first.answer,
        "wrong": first.wrong,
        "tokens": first.tokens,
        "target": first.target,
        "methods": {result.method: result.to_json() for result in results},
    }
    if checks:
        data["randomization"] = {check.method: check.to_json() for check in checks}
    return data


def attribution_section(results: list, checks: list | None = None) -> tuple[list, Files]:
    """The page items and the files (attribution.json, attribution.png and, with randomization
    `checks`, randomization.png) of token attributions of one prompt: the command's page and the
    report's section are both made of them."""

    heatmap = figure_png(plot_attribution(results))
    items = [
        (attribution_caption(results), attribution_html(results)),
        ("Tokens x methods.", image_html(heatmap, "token attribution heatmap")),
    ]
    files: Files = {"attribution.json": json_text(attribution_json(results, checks))}
    if checks:
        curve = figure_png(plot_randomization(checks))
        items.append((randomization_caption(checks), image_html(curve, "randomization curves")))
        files["randomization.png"] = curve
    files["attribution.png"] = heatmap
    return items, files


def attribution_file_names(*, sanity: bool) -> list[str]:
    names = ["attribution.json", "attribution.html", "attribution.png"]
    return names + (["randomization.png"] if sanity else [])


def attribution_files(results: list, checks: list | None = None) -> Files:
    """attribution.json, attribution.html and attribution.png; with randomization `checks`, also
    randomization.png (and the curves in the JSON and the page)."""
    from mechlab.present.page import render_page

    items, files = attribution_section(results, checks)
    files["attribution.html"] = render_page(items, title=f"{results[0].model}: token attribution")
    return declared(files, attribution_file_names(sanity=bool(checks)))

"""Pages for what units respond to: Neuroscope-style neuron pages and sparse-autoencoder feature
dashboards. They take records (mechlab.analysis.neurons, mechlab.analysis.sae) and the text of the
tokens they show, never a model; every page is offline HTML that reads without scripts (shading and
hover titles are inline styles and attributes)."""

import html
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.table import Table
from torch import Tensor

from mechlab.analysis.neurons import NeuronRecords
from mechlab.analysis.sae import SAE, FeatureDashboards
from mechlab.errors import InputError
from mechlab.io import figure_png, json_text
from mechlab.present.figure import Figure, new_figure, plain
from mechlab.present.page import (
    Files,
    declared,
    diverging_colour,
    image_html,
    render_page,
    safetensors_bytes,
    visible_token,
)
from mechlab.terminal import markup_safe

TokenText = dict[int, str]  # token id -> its text, for every id a page shows
CONTEXT_STYLE = "font-family: monospace; font-size: 12px; white-space: pre-wrap"


def neuron_label(layer: int, neuron: int) -> str:
    return f"L{layer}N{neuron}"


def context_html(
    tokens: list[int | None], values: list[float], limit: float, token_text: TokenText
) -> str:
    """One context: each token shaded by the unit's activation there (red up, blue down, scaled to
    `limit`), the centre token underlined; hover a token for its value."""
    centre = len(tokens) // 2
    spans = []
    for index, (token, value) in enumerate(zip(tokens, values, strict=True)):
        if token is None:
            continue
        text = html.escape(visible_token(token_text.get(token, f"<{token}>")))
        underline = "text-decoration: underline; font-weight: bold;" if index == centre else ""
        spans.append(
            f'<span style="background:{diverging_colour(value, limit)}; {underline}" '
            f'title="{value:+.4g}">{text}</span>'
        )
    return "".join(spans)


def contexts_table_html(rows: list[tuple[float, list[int | None], list[float]]], limit: float,
                        token_text: TokenText) -> str:  # fmt: skip
    """(value, context tokens, context activations) rows as a table."""
    body = "".join(
        f"<tr><td style='text-align:right; padding-right:1em'>{value:+.3f}</td>"
        f"<td style='{CONTEXT_STYLE}'>{context_html(tokens, values, limit, token_text)}</td></tr>"
        for value, tokens, values in rows
    )
    return f'<table class="mechlab-contexts">{body}</table>'


def effects_html(
    promoted: list[tuple[int, float]], suppressed: list[tuple[int, float]], token_text: TokenText
) -> str:
    def cells(rows: list[tuple[int, float]]) -> str:
        return "".join(
            f"<tr><td style='{CONTEXT_STYLE}'>{html.escape(repr(token_text.get(t, f'<{t}>')))}"
            f"</td><td style='text-align:right'>{value:+.3f}</td></tr>"
            for t, value in rows
        )

    return (
        '<table style="display:inline-table; margin-right:3em"><tr><th>promotes</th><th></th>'
        f"</tr>{cells(promoted)}</table>"
        '<table style="display:inline-table"><tr><th>suppresses</th><th></th></tr>'
        f"{cells(suppressed)}</table>"
    )


def band_rows(
    records: NeuronRecords, index: int, unit: int, bands: int = 4, per_band: int = 5
) -> list:
    """The sampled activations above zero grouped into `bands` intervals of the unit's largest
    activation ((3/4, 1], (1/2, 3/4], ...: Bricken et al. 2023's quantile view), up to `per_band`
    contexts each, highest first within a band: (title, rows)."""
    maximum = float(records.top_values[index, unit, 0])
    sample = records.sample_values, records.sample_where, records.sample_contexts
    if sample[0] is None or sample[1] is None or sample[2] is None:
        return []  # records made without a sample
    values = sample[0][index, unit].tolist()
    where = sample[1][index, unit].tolist()
    contexts = sample[2][index, unit]
    out = []
    for band in range(bands, 0, -1):
        low, high = (band - 1) / bands * maximum, band / bands * maximum
        chosen = [
            i
            for i in sorted(range(len(values)), key=lambda i: -values[i])
            if where[i][0] >= 0 and low < values[i] <= high
        ][:per_band]
        rows = [(values[i], records.window_tokens(*where[i]), contexts[i].tolist()) for i in chosen]
        out.append((f"activations in ({low:.3g}, {high:.3g}]", rows))
    return out


def unit_page(
    records: NeuronRecords, layer: int, unit: int, token_text: TokenText, *, kind: str = "neuron"
) -> str:
    """One unit's page (an MLP neuron, or an SAE latent with kind "feature"): its summary, the top
    and bottom contexts shaded by its activation, the sampled contexts by band of activation when
    there are samples, its activation histogram, and the tokens its output promotes and suppresses
    directly."""

    index = records.layer_index(layer)
    label = neuron_label(layer, unit) if kind == "neuron" else f"feature {unit}"

    def rows(values: Tensor, where: Tensor, contexts: Tensor) -> list:
        out = []
        for rank in range(records.k):
            document, position = where[index, unit, rank].tolist()
            out.append(
                (
                    float(values[index, unit, rank]),
                    records.window_tokens(document, position),
                    contexts[index, unit, rank].tolist(),
                )
            )
        return out

    top = rows(records.top_values, records.top_where, records.top_contexts)
    bottom = rows(records.bottom_values, records.bottom_where, records.bottom_contexts)
    limit = max(abs(top[0][0]), abs(bottom[0][0]), 1e-9)
    histogram = figure_png(
        plot_histogram(
            records.bin_edges[index, unit].numpy(),
            records.histogram[index, unit].numpy(),
            f"{records.model}: {label} ({records.hook}) on {records.tokens_seen:,} tokens",
        )
    )
    summary = (
        f"{records.model}, {records.hook} of layer {layer}, {label}: active (above zero) on "
        f"{records.frac_positive[index, unit]:.2%} of {records.tokens_seen:,} tokens "
        f"({len(records.documents):,} texts, BOS never counted); mean "
        f"{records.mean[index, unit]:+.4f}, standard deviation {records.std[index, unit]:.4f}. "
        f"Each context shows {records.context} tokens either side, shaded by the activation (red "
        "above zero, blue below; hover a token for its value); the recorded token is underlined."
    )
    items = [
        ("", f"<p>{html.escape(summary)}</p>"),
        (f"The {records.k} highest activations", contexts_table_html(top, limit, token_text)),
    ]
    if records.sample_values is not None:
        for title, band in band_rows(records, index, unit):
            items.append(
                (
                    f"A uniform sample of the activations above zero, {title}",
                    contexts_table_html(band, limit, token_text) if band else "<p>none</p>",
                )
            )
    if kind == "neuron":
        items.append(
            (f"The {records.k} lowest activations", contexts_table_html(bottom, limit, token_text))
        )
    items.append(
        (
            "Activation histogram (the end bins also count what lies beyond them)",
            image_html(histogram, "histogram"),
        )
    )
    effects = (
        records.promoted,
        records.promoted_values,
        records.suppressed,
        records.suppressed_values,
    )
    if (
        effects[0] is not None
        and effects[1] is not None
        and effects[2] is not None
        and effects[3] is not None
    ):
        promoted = list(
            zip(
                effects[0][index, unit].tolist(),
                effects[1][index, unit].tolist(),
                strict=True,
            )
        )
        suppressed = list(
            zip(
                effects[2][index, unit].tolist(),
                effects[3][index, unit].tolist(),
                strict=True,
            )
        )
        how = (
            "W_out[n] @ W_U: the tokens this neuron's output most promotes and suppresses "
            "straight through the unembedding (the final norm's weight folded in, its "
            "per-position scale left out; later layers ignored)."
            if kind == "neuron"
            else "W_dec[f] @ W_U divided by the final norm's mean scale on these texts: the "
            "tokens this feature's direction most promotes and suppresses if it reached the "
            "unembedding directly (later layers ignored)."
        )
        items.append(
            (f"Direct effect on the logits, {how}", effects_html(promoted, suppressed, token_text))
        )
    return render_page(items, title=f"{records.model}: {label}")


def neuron_page(records: NeuronRecords, layer: int, neuron: int, token_text: TokenText) -> str:
    return unit_page(records, layer, neuron, token_text, kind="neuron")


def features_index_page(
    records: NeuronRecords, ranking: list[int], token_text: TokenText, links: dict
) -> str:
    """The SAE's latents ranked by density, each with its most frequent top-activating tokens and
    a link to its page where one was made."""
    rows = []
    for latent in ranking:
        centres = [
            records.window_tokens(*w)[records.context]
            for w in records.top_where[0, latent].tolist()
        ]
        known = [t for t in centres if t is not None]
        common = sorted(set(known), key=lambda t: (-known.count(t), t))[:5]
        tokens = ", ".join(repr(token_text.get(t, f"<{t}>")) for t in common)
        name = f"feature {latent}"
        if latent in links:
            name = f'<a href="{html.escape(links[latent])}">{name}</a>'
        rows.append(
            f"<tr><td>{name}</td><td>{records.frac_positive[0, latent]:.3%}</td>"
            f"<td>{float(records.top_values[0, latent, 0]):.3g}</td>"
            f"<td style='{CONTEXT_STYLE}'>{html.escape(tokens)}</td></tr>"
        )
    table = (
        "<table><tr><th>latent</th><th>density</th><th>max</th><th>top tokens</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    caption = (
        f"{records.model}: {records.top_values.shape[1]} SAE latents ({records.hook}), ranked by "
        f"density (how often each is active) on {records.tokens_seen:,} held-out tokens; top "
        "tokens: the most frequent tokens at its highest activations."
    )
    return render_page([(caption, table)], title=f"{records.model}: SAE features")


def unit_token_ids(records: NeuronRecords, layer: int, unit: int) -> set[int]:
    """Every token id a unit's page shows (for the caller to turn into text)."""
    index = records.layer_index(layer)
    ids: set[int] = set()
    wheres = [records.top_where, records.bottom_where]
    if records.sample_where is not None:
        wheres.append(records.sample_where)
    for where in wheres:
        for document, position in where[index, unit].tolist():
            if document >= 0:
                ids.update(t for t in records.window_tokens(document, position) if t is not None)
    for effects in (records.promoted, records.suppressed):
        if effects is not None:
            ids.update(effects[index, unit].tolist())
    return ids


neuron_token_ids = unit_token_ids


Decode = Callable[[list[int]], list[str]]  # token ids -> their texts (mechlab.analysis.tokens)


def token_texts(ids: set[int | None], decode: Decode) -> TokenText:
    ordered = sorted(i for i in ids if i is not None)
    return dict(zip(ordered, decode(ordered), strict=True))


def neuron_page_names(out: Path, layer: int, neurons: list[int]) -> tuple[Path, list[str]]:
    """Where `mechlab neurons show` writes its pages: `out` itself when it names one page
    (PAGE.html, one neuron), else one page per neuron in the directory `out`."""
    if out.suffix == ".html":
        if len(neurons) > 1:
            raise InputError(
                f"--out {str(out)!r} is one page, but {len(neurons)} neurons were asked for: give "
                "a directory instead (one page per neuron)"
            )
        return out.parent, [out.name]
    return out, [f"neuron_L{layer}N{n}.html" for n in neurons]


def neuron_pages(
    records: NeuronRecords, layer: int, neurons: list[int], decode: Decode
) -> list[str]:
    """One page per neuron of `layer` (neuron_page), the tokens they show decoded by `decode`."""
    pages = []
    for neuron in neurons:
        token_text = token_texts(set(neuron_token_ids(records, layer, neuron)), decode)
        pages.append(neuron_page(records, layer, neuron, token_text))
    return pages


def dashboard_file_names(features: list[int]) -> list[str]:
    """The files `mechlab sae show` writes: the index, features.json and a page per feature asked
    for (without --feature, the pages of the densest latents, named once they are known)."""
    return ["index.html", "features.json"] + [f"feature_{f}.html" for f in features]


def dashboard_files(dashboards: FeatureDashboards, directory: str | Path, decode: Decode) -> Files:
    """index.html (every live latent, densest first), a page per chosen latent, and
    features.json (density and top activation of every latent, which pages were made)."""
    from mechlab.io import json_text

    records = dashboards.records
    ids: set[int | None] = set()
    for feature in set(dashboards.chosen) | set(dashboards.alive):
        where = records.top_where[0, feature].tolist()
        ids |= {records.window_tokens(*w)[records.context] for w in where}
    for feature in dashboards.chosen:
        ids |= unit_token_ids(records, dashboards.layer, feature)
    token_text = token_texts(ids, decode)
    files: Files = {
        f"feature_{f}.html": unit_page(records, dashboards.layer, f, token_text, kind="feature")
        for f in dashboards.chosen
    }
    links = {f: f"feature_{f}.html" for f in dashboards.chosen}
    files["index.html"] = features_index_page(records, dashboards.alive, token_text, links)
    files["features.json"] = json_text(
        {
            "sae": str(directory),
            "tokens_seen": records.tokens_seen,
            "dead_on_these_tokens": len(dashboards.ranking) - len(dashboards.alive),
            "density": records.frac_positive[0].tolist(),
            "max_activation": records.top_values[0, :, 0].tolist(),
            "pages": dashboards.chosen,
        }
    )
    return declared(files, dashboard_file_names(dashboards.chosen))


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


def sae_table(sae: SAE) -> Table:
    """An SAE's metrics on held-out text, as mechlab measures them."""
    m = sae.metrics
    if m is None:
        raise InputError("this SAE holds no metrics: measure it with `mechlab sae train`")
    table = Table(
        title=markup_safe(
            f"{sae.manifest['model']}: SAE on {sae.site} of layer {sae.layer}, {sae.width} "
            f"latents, k={sae.k}"
        )
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in [
        ("fraction of variance explained", f"{m.variance_explained:.3f}"),
        ("  with the massive activations too", f"{m.variance_explained_all:.3f}"),
        ("L0 (active latents per token)", f"{m.l0:.1f}"),
        ("dead latents (never active held out)", f"{m.dead_fraction:.1%}"),
        ("next-token loss, clean", f"{m.clean_loss:.3f}"),
        ("  with the SAE spliced in", f"{m.spliced_loss:.3f} ({m.delta_loss:+.3f})"),
        ("  zero-ablated", f"{m.zero_ablation_loss:.3f}"),
        ("  mean-ablated", f"{m.mean_ablation_loss:.3f}"),
        ("KL(clean || spliced), nats/token", f"{m.kl:.3f}"),
        ("loss recovered vs zero-ablation", f"{m.recovered_vs_zero:.1%}"),
        ("loss recovered vs mean-ablation", f"{m.recovered_vs_mean:.1%}"),
    ]:
        table.add_row(name, value)
    table.caption = (
        f"held out: {m.tokens:,} activations, losses on {m.loss_tokens:,} tokens; trained on "
        f"{sae.manifest['tokens']:,} tokens x {sae.manifest['epochs']} epochs; "
        f"{m.massive_tokens} held-out massive activations (norm > {sae.norm_limit:.4g}) passed "
        "through"
    )
    return table


NEURON_FILES = ["neurons.safetensors", "neurons.json"]


def neuron_files(records: NeuronRecords) -> Files:
    """neurons.safetensors (every tensor, nothing pickled) and neurons.json (what they are)."""
    files: Files = {
        "neurons.safetensors": safetensors_bytes(records.tensors()),
        "neurons.json": json_text(records.to_json()),
    }
    return declared(files, NEURON_FILES)


SAE_FILES = ["sae.safetensors", "sae.json", "checkpoint.safetensors"]  # the last while it trains


def sae_files(sae: SAE) -> Files:
    """sae.safetensors (the inference weights) and sae.json (model, weights hash, corpus, how it
    was trained, mechlab's metrics, and the SHA-256 of sae.safetensors: a weights file changed
    since, converted to float16 or rescaled, is refused by SAE.load)."""
    import hashlib

    weights = safetensors_bytes(sae.tensors())
    manifest = {**sae.to_json(), "sae_sha256": hashlib.sha256(weights).hexdigest()}
    files: Files = {"sae.safetensors": weights, "sae.json": json_text(manifest)}
    return declared(files, SAE_FILES[:2])

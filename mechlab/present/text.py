"""Terminal tables (rich) made from result objects. Nothing here computes; see plots.py for
figures."""

from rich.console import JustifyMethod
from rich.table import Table

from mechlab.labels import head_label, heads_label, scored_heads_label
from mechlab.moved import moved_names
from mechlab.scratch.parity import ParityReport
from mechlab.terminal import markup_safe


def parity_table(report: ParityReport, *, title: str) -> Table:
    table = Table(title=markup_safe(title))
    columns: list[tuple[str, JustifyMethod]] = [
        ("component", "left"),
        ("max abs err", "right"),
        ("max rel err", "right"),
        ("atol x", "right"),  # the component's rms, where above one (see mechlab.scratch.parity)
        ("", "center"),
    ]
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for c in report.components:
        table.add_row(
            markup_safe(c.name),
            f"{c.max_abs_err:.2e}",
            f"{c.max_rel_err:.2e}",
            f"{c.scale:.3g}" if c.scale != 1.0 else "",
            "[green]ok[/]" if c.passed else "[red]FAIL[/]",
        )
    return table


def models_table(rows, cache: object) -> Table:
    """`mechlab models`: each spec, its kind, whether it loads offline now, and a note."""
    table = Table(title=markup_safe(f"model specs (cache: {cache})"))
    for column in ["spec", "kind", "offline now", "note"]:
        table.add_column(column)
    for spec, kind, offline, note in rows:
        table.add_row(
            markup_safe(spec),
            markup_safe(kind),
            "[green]yes[/]" if offline else "[red]no[/]",
            markup_safe(note),
        )
    table.caption = (
        "also accepted: any TransformerLens official name, or a local checkpoint directory"
    )
    return table


def prediction_table(prediction, *, spec: str) -> Table:
    table = Table(title=markup_safe(f"{spec}: next token after {prediction.prompt!r}"))
    table.add_column("rank", justify="right")
    table.add_column("token")
    table.add_column("probability", justify="right")
    pairs = zip(prediction.tokens, prediction.probabilities, strict=True)
    for rank, (token, p) in enumerate(pairs, start=1):
        table.add_row(str(rank), markup_safe(repr(token)), f"{p:.3f}")
    return table


def verdict_lines(reports: list[ParityReport]) -> list[str]:
    """`mechlab verify`'s verdict, one line per reference."""
    return [
        f"vs {report.reference}: all {len(report.components)} components agree "
        f"(atol={report.atol}, scaled by the component's rms where above one; rtol={report.rtol})"
        if report.passed
        else f"vs {report.reference}: {len(report.failures)} components differ; the first is "
        f"{report.first_failure}"
        for report in reports
    ]


def heads_table(scan, threshold: float, k: int = 5) -> Table:
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


def lens_table(result, max_positions: int = 12) -> Table:
    """Layers x positions with each cell's top-1 token (the last `max_positions` positions)."""
    first = max(0, len(result.token_strs) - max_positions)
    table = Table(
        title=markup_safe(
            f"{result.model}: logit lens, top-1 token per layer (rows) and position (columns)"
        )
    )
    table.add_column("layer")
    for token in result.token_strs[first:]:
        table.add_column(markup_safe(repr(token)[1:-1][:10]), overflow="ellipsis", max_width=10)
    for row in range(len(result.layers)):
        cells = []
        for position in range(first, len(result.token_strs)):
            token, prob = (
                result.top_tokens[row][position][0],
                result.top_probs[row, position, 0].item(),
            )
            style = "bold" if prob > 0.5 else ("" if prob > 0.1 else "dim")
            cells.append(
                f"[{style}]{markup_safe(repr(token)[1:-1][:10])}[/]"
                if style
                else markup_safe(repr(token)[1:-1][:10])
            )
        table.add_row(markup_safe(result.layers[row]), *cells)
    if result.target_id is not None:
        layer = result.first_top1_layer
        table.caption = markup_safe(
            f"target {result.target_token!r}: top-1 at the last position from "
            + (
                f"row {layer} ({result.layers[layer]})"
                if layer is not None
                else "no layer (not the output's top-1)"
            )
        )
    return table


def ablation_table(study) -> Table:
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


def patch_table(result, k: int = 10) -> Table:
    """The k cells that restore (or destroy) the most of the clean logit difference."""
    table = Table(
        title=markup_safe(
            f"{result.model}: {result.method} patching over {result.over}; logit diff "
            f"{result.answer!r} - {result.wrong!r}: clean {result.clean_logit_diff:.2f}, "
            f"corrupted {result.corrupted_logit_diff:.2f}"
        )
    )
    columns: list[tuple[str, JustifyMethod]] = [
        ("rank", "right"),
        ("activation", "left"),
        ("where", "left"),
        ("restored", "right"),
    ]
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for rank, (row, col, value) in enumerate(result.top(k), start=1):
        table.add_row(str(rank), markup_safe(row), markup_safe(col), f"{value:.3f}")
    table.caption = "restored: 0 = the corrupted run's logit difference, 1 = the clean run's"
    return table


def dla_table(result, k: int = 10) -> Table:
    """The sum by kind of component, then the k heads with the largest direct contribution."""
    table = Table(title=markup_safe(f"{result.model}: direct logit attribution of {result.what}"))
    table.add_column("component")
    table.add_column("contribution", justify="right")
    for name, value in [
        ("embeddings", result.embed),
        ("all heads", result.heads.sum().item()),
        ("attention biases", result.attn_bias.sum().item()),
        ("all MLPs", result.mlps.sum().item()),
        ("unembedding bias", result.unembed_bias),
    ]:
        table.add_row(name, f"{value:+.3f}")
    table.add_row("[b]total[/] (the model's own)", f"[b]{result.total:+.3f}[/]")
    table.add_row(
        f"sum of the parts (within {result.tolerance:.2g} in {result.dtype})",
        f"{result.sum_of_parts:+.3f}",
    )
    for layer, head, value in result.top_heads(k):
        table.add_row(head_label(layer, head), f"{value:+.3f}")
    table.caption = "through the final norm with its scale frozen at the final residual's own"
    return table


def sae_table(sae) -> Table:
    """An SAE's metrics on held-out text, as mechlab measures them."""
    m = sae.metrics
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


# moved to mechlab.present.circuits (the old paths still work)
__getattr__ = moved_names(
    __name__,
    dict.fromkeys(
        ["circuits_table"],
        "mechlab.present.circuits",
    ),
)

"""What commands write, built in memory from result objects: figures as PNG bytes, JSON text, HTML
pages, and the captions that say what a reader is seeing. The CLI and the report both use these
builders, so each command only parses arguments, computes results and writes the files returned.
Nothing here computes model outputs (see the compute modules) or touches the disk (see mechlab.io).
"""

import base64
import html

from mechlab.defaults import INDUCTION_THRESHOLD
from mechlab.io import figure_png, json_text
from mechlab.labels import head_label, heads_label
from mechlab.moved import moved_names

Files = dict[str, bytes | str]  # file name (relative to the output directory) -> content


def declared(files: Files, names: list[str]) -> Files:
    """`files`, after checking that they are exactly the `names` declared for them: the CLI checks
    the declared names before any work, so a builder that wrote another file would write a target
    never checked (a programming error, not the user's)."""
    if set(files) != set(names):
        raise RuntimeError(
            f"files built {sorted(files)} differ from the files declared {sorted(names)}"
        )
    return files


def verify_json(reports: list, spec: str, prompt: str) -> str:
    """`mechlab verify --json`: the first report, the model and prompt, and the Hugging Face
    report where there is one."""
    document = dict(reports[0].to_json(), model=spec, prompt=prompt)
    if len(reports) > 1:
        document["hugging_face"] = reports[1].to_json()
    return json_text(document)


def model_files(spec: str, files: Files, *, several: bool) -> Files:
    """A model's files under ``<model slug>/`` when several models share the output directory."""
    from mechlab.io import model_slug

    prefix = f"{model_slug(spec)}/" if several else ""
    return {prefix + name: content for name, content in files.items()}


def image_html(png: bytes, alt: str) -> str:
    """An <img> holding the PNG itself (a data URI), so a page needs no other file."""
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<img class="mechlab-figure" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
    )


# --------------------------------------------------------------------------------------------------
# Logit lens

LENS_FIGURES = ["lens_top1.png", "lens_rank.png", "lens_kl.png"]


def lens_figures(result, prefix: str = "lens") -> dict[str, bytes]:
    """nostalgebraist's three heatmaps as PNG bytes: top-1 token, rank of the next token, KL."""
    from mechlab.present.plots import plot_lens_kl, plot_lens_rank, plot_lens_top1

    return {
        f"{prefix}_top1.png": figure_png(plot_lens_top1(result)),
        f"{prefix}_rank.png": figure_png(plot_lens_rank(result)),
        f"{prefix}_kl.png": figure_png(plot_lens_kl(result)),
    }


def lens_caption(result) -> str:
    if result.target_id is None:
        where = ""
    elif result.first_top1_layer is not None:
        where = (
            f" {result.target_token!r} becomes the top-1 prediction at the last position at row "
            f"{result.first_top1_layer} ({result.layers[result.first_top1_layer]})."
        )
    else:
        where = f" {result.target_token!r} is not the final top-1."
    return (
        f"{result.model}: logit lens on {result.prompt!r}. Each cell decodes the residual stream "
        "at one layer (row) and position (column) through the final norm and unembedding and "
        "shows the most likely next token, shaded by its probability; hover a cell for its "
        f"top-k.{where}"
    )


def lens_file_names(*, curves: bool) -> list[str]:
    """The files lens_files writes: the CLI checks these before any work."""
    return [*LENS_FIGURES, "lens.json", "lens.html"] + (["lens_curves.png"] if curves else [])


def lens_files(result, curves=None, prompts: list[str] | None = None) -> Files:
    """lens.json, the three heatmaps, lens.html; with `curves` (many prompts) also
    lens_curves.png (lens_file_names)."""
    from mechlab.present.plots import plot_lens_curves
    from mechlab.present.views import lens_grid_html, render_page

    report = result.to_json()
    files: Files = dict(lens_figures(result))
    if curves is not None:
        report.update(prompts=prompts, curves=curves.to_json())
        files["lens_curves.png"] = figure_png(plot_lens_curves(curves))
    files["lens.json"] = json_text(report)
    files["lens.html"] = render_page(
        [(lens_caption(result), lens_grid_html(result))], title=f"{result.model}: logit lens"
    )
    return declared(files, lens_file_names(curves=curves is not None))


# --------------------------------------------------------------------------------------------------
# Head scan

HEAD_FIGURE_SCORES = [
    "induction",
    "previous_token",
    "duplicate_token",
    "current_token",
    "first_token",
    "copying",
]


def head_figures(scan, names=HEAD_FIGURE_SCORES) -> dict[str, bytes]:
    """One heatmap per score and the loss along the repeated sequences, as PNG bytes."""
    from mechlab.present.plots import plot_head_scores, plot_loss_by_position

    figures = {f"heads_{name}.png": figure_png(plot_head_scores(scan, name)) for name in names}
    figures["loss_by_position.png"] = figure_png(plot_loss_by_position(scan))
    return figures


def induction_caption(scan, threshold: float = INDUCTION_THRESHOLD) -> str:
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


def loss_caption(scan) -> str:
    return (
        f"Next-token loss along the repeated sequences: {scan.loss_first_half:.2f} nats on the "
        f"random first copy, {scan.loss_second_half:.2f} on the repeat, which the induction heads "
        "make predictable."
    )


def induction_views(scan, patterns: list) -> list:
    """Attention views of the top induction heads and the top previous-token heads on one of the
    scan's sequences, the two halves of the induction circuit (`patterns`: their HeadPatterns, as
    mechlab.workflows.attention.induction_patterns computes them)."""
    from mechlab.present.views import patterns_view

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


def heads_files(scan, patterns: list, threshold: float = INDUCTION_THRESHOLD, study=None) -> Files:
    """heads.json, a heatmap per score, loss_by_position.png and heads.html (attention views of
    `patterns`, see induction_views); with an ablation `study`, also ablation.png and heads.json's
    "ablation" list."""
    from mechlab.present.views import render_page

    files: Files = dict(head_figures(scan))
    report = scan.to_json(threshold)
    items = induction_views(scan, patterns)
    if study is not None:
        from mechlab.present.plots import plot_ablation

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


def mosaic_png(scans) -> bytes:
    from mechlab.present.plots import plot_induction_mosaic

    return figure_png(plot_induction_mosaic(scans))


# --------------------------------------------------------------------------------------------------
# Attention


def attention_file_names(layers: list[int]) -> list[str]:
    """The files attention_files writes for these layers: the CLI checks these before any work."""
    return ["attention.html"] + [f"attention_L{layer}.png" for layer in layers]


def attention_files(model_name: str, layers: list) -> Files:
    """attention.html with one view per layer, and attention_L{layer}.png for each (`layers`: one
    HeadPatterns per layer, in order)."""
    from mechlab.present.plots import plot_patterns
    from mechlab.present.views import patterns_view, render_page

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


# --------------------------------------------------------------------------------------------------
# Causal checks


def ablation_caption(study) -> str:
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


def patch_caption(result) -> str:
    return (
        f"{result.model}: {result.method} activation patching over {result.over}, from the clean "
        f"prompt {result.clean!r} into the corrupted {result.corrupted!r}. Each cell is the logit "
        f"difference {result.answer!r} - {result.wrong!r} at the last position with that one "
        "activation patched, normalised: 0 = the corrupted run, 1 = the clean run. Hover a cell "
        "for its value."
    )


def patch_file_names(over: str) -> list[str]:
    return ["patch.json", f"patch_{over}.png", "patch.html"]


def patch_files(result) -> Files:
    """patch.json, patch_<over>.png and patch.html (the grid as a table with hover values)."""
    from mechlab.present.plots import plot_patch_grid
    from mechlab.present.views import patch_grid_html, render_page

    files: Files = {
        "patch.json": json_text(result.to_json()),
        f"patch_{result.over}.png": figure_png(plot_patch_grid(result)),
        "patch.html": render_page(
            [(patch_caption(result), patch_grid_html(result))],
            title=f"{result.model}: activation patching",
        ),
    }
    return declared(files, patch_file_names(result.over))


def dla_caption(result) -> str:
    return (
        f"{result.model}: direct logit attribution of {result.what} at the last position of "
        f"{result.prompt!r}: what each head and MLP writes straight into it, through the final "
        "norm with its scale frozen at the final residual stream's own. The parts add up to "
        f"{result.sum_of_parts:.3f}, the model's own is {result.total:.3f}: within the "
        f"{result.tolerance:.2g} that rounding in {result.dtype} allows (checked)."
    )


DLA_FILES = ["dla.json", "dla_heads.png", "dla_layers.png", "dla.html"]


def dla_files(result) -> Files:
    """dla.json, dla_heads.png, dla_layers.png and dla.html."""
    from mechlab.present.plots import plot_dla_heads, plot_dla_layers
    from mechlab.present.views import dla_html, render_page

    heads_png = figure_png(plot_dla_heads(result))
    layers_png = figure_png(plot_dla_layers(result))
    files: Files = {
        "dla.json": json_text(result.to_json()),
        "dla_heads.png": heads_png,
        "dla_layers.png": layers_png,
        "dla.html": render_page(
            [
                (dla_caption(result), dla_html(result)),
                ("Per layer, and the running total.", image_html(layers_png, "per layer")),
            ],
            title=f"{result.model}: direct logit attribution",
        ),
    }
    return declared(files, DLA_FILES)


# --------------------------------------------------------------------------------------------------
# Training


FORMATION_FILES = ["formation.json", "formation.png"]


def formation_files(formation) -> Files:
    """formation.json and formation.png."""
    from mechlab.present.plots import plot_formation

    files: Files = {
        "formation.json": json_text(formation.to_json()),
        "formation.png": figure_png(plot_formation(formation)),
    }
    return declared(files, FORMATION_FILES)


def tuned_lens_file_names(*, trained: bool) -> list[str]:
    """The files `mechlab tune-lens` writes: the evaluation, and when it trains, the lens and the
    checkpoint it writes as it trains (removed at the end)."""
    from mechlab.defaults import TUNED_LENS_CHECKPOINT_FILES, TUNED_LENS_FILES

    trained_files = [*TUNED_LENS_FILES, *TUNED_LENS_CHECKPOINT_FILES] if trained else []
    return ["eval.json", "tuned_vs_logit.png", *trained_files]


def tuned_lens_files(evaluation) -> Files:
    """eval.json and tuned_vs_logit.png."""
    from mechlab.present.plots import plot_tuned_vs_logit

    files: Files = {
        "eval.json": json_text(evaluation.to_json()),
        "tuned_vs_logit.png": figure_png(plot_tuned_vs_logit(evaluation)),
    }
    return declared(files, tuned_lens_file_names(trained=False))


# --------------------------------------------------------------------------------------------------
# Token attribution


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
    from mechlab.present.plots import plot_attribution, plot_randomization
    from mechlab.present.views import attribution_html

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
    from mechlab.present.views import render_page

    items, files = attribution_section(results, checks)
    files["attribution.html"] = render_page(items, title=f"{results[0].model}: token attribution")
    return declared(files, attribution_file_names(sanity=bool(checks)))


# --------------------------------------------------------------------------------------------------
# Circuits from the weights


# --------------------------------------------------------------------------------------------------
# Grokking

GROKKING_FILES = ["grokking.json", "grokking.png", "grokking.html"]


def grokking_caption(run) -> str:
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


def grokking_table_html(run, rows: int = 12) -> str:
    """The checkpoints as a table readable without scripts (about `rows` of them, evenly spaced)."""
    every = max(1, len(run.steps) // rows)
    chosen = sorted(set(range(0, len(run.steps), every)) | {len(run.steps) - 1})
    names = [
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


def grokking_files(run) -> Files:
    """grokking.json (every field), grokking.png and grokking.html."""
    from mechlab.present.plots import plot_grokking
    from mechlab.present.views import render_page

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


# --------------------------------------------------------------------------------------------------
# Features

NEURON_FILES = ["neurons.safetensors", "neurons.json"]


def safetensors_bytes(tensors: dict, metadata: dict | None = None) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=metadata)


def neuron_files(records) -> Files:
    """neurons.safetensors (every tensor, nothing pickled) and neurons.json (what they are)."""
    files: Files = {
        "neurons.safetensors": safetensors_bytes(records.tensors()),
        "neurons.json": json_text(records.to_json()),
    }
    return declared(files, NEURON_FILES)


SAE_FILES = ["sae.safetensors", "sae.json", "checkpoint.safetensors"]  # the last while it trains


def sae_files(sae) -> Files:
    """sae.safetensors (the inference weights) and sae.json (model, weights hash, corpus, how it
    was trained, mechlab's metrics, and the SHA-256 of sae.safetensors: a weights file changed
    since, converted to float16 or rescaled, is refused by SAE.load)."""
    import hashlib

    weights = safetensors_bytes(sae.tensors())
    manifest = {**sae.to_json(), "sae_sha256": hashlib.sha256(weights).hexdigest()}
    files: Files = {"sae.safetensors": weights, "sae.json": json_text(manifest)}
    return declared(files, SAE_FILES[:2])


# moved to mechlab.present.circuits (the old paths still work)
__getattr__ = moved_names(
    __name__,
    dict.fromkeys(
        [
            "circuits_caption",
            "circuits_file_names",
            "circuits_files",
            "circuits_section",
            "copying_caption",
            "induction_circuit_caption",
        ],
        "mechlab.present.circuits",
    ),
)

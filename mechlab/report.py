"""The one-command report: parity, logit lens, head scan and attention views of one or more models
on one self-contained offline page, with the figures and JSON beside it."""

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from mechlab.errors import InputError
from mechlab.heads import HeadScan, scan_heads
from mechlab.io import ensure_writable_dir, figure_png, model_slug, write_bytes, write_json
from mechlab.lens import LensResult, logit_lens, resolve_target
from mechlab.loading import load_model
from mechlab.model import Transformer
from mechlab.parity import ParityReport, compare
from mechlab.plots import (
    plot_head_scores, plot_induction_mosaic, plot_lens_kl, plot_lens_rank, plot_lens_top1, plot_loss_by_position,
)
from mechlab.tokens import to_tokens
from mechlab.views import View, attention_heads_view, save_html

LENS_PROMPTS = [  # (prompt, target) pairs; the first two are classics of the logit-lens posts
    ("The capital of France is", " Paris"),
    ("The Eiffel Tower is located in the city of", " Paris"),
    ("When Mary and John went to the store, John gave a drink to", " Mary"),
]
PARITY_PROMPT = "The quick brown fox jumps over the lazy dog."


@dataclass
class ModelReport:
    spec: str
    parity: ParityReport
    lenses: list[LensResult]
    scan: HeadScan
    views: list[View] = field(default_factory=list)
    figures: dict = field(default_factory=dict)  # file name -> PNG bytes


def build_report(spec: str, *, seq_len: int = 50, batch: int = 10, progress=None) -> ModelReport:
    """Run every analysis on one model; nothing is written."""
    step = progress.update if progress is not None else (lambda n: None)
    model = load_model(spec)
    step(1)
    parity = compare(Transformer.from_hooked(model), model, to_tokens(model, PARITY_PROMPT))
    step(1)
    lenses = []
    for prompt, target in LENS_PROMPTS:
        try:  # a tokenizer may split the target into several tokens: then follow no target
            target_id = resolve_target(model, target)
        except InputError:
            target_id = None
        lenses.append(logit_lens(model, prompt, target=target_id))
        lenses[-1].model = spec
    step(1)
    scan = scan_heads(model, seq_len=min(seq_len, (model.cfg.n_ctx - 1) // 2), batch=batch)
    scan.model = spec
    step(1)
    induction, previous = scan.top("induction", 4), scan.top("previous_token", 3)
    views = [
        attention_heads_view(model, scan.tokens[:1], [(layer, head) for layer, head, _ in induction], caption=(
            f"{spec}: the four heads with the highest induction scores, on one sequence [BOS] + r + r. In the "
            "second half an induction head attends along a stripe one position to the right of the earlier copy "
            "of the current token, and so predicts that the sequence repeats.")),
        attention_heads_view(model, scan.tokens[:1], [(layer, head) for layer, head, _ in previous], caption=(
            f"{spec}: the three heads with the highest previous-token scores: each position attends to the one "
            "before it, which lets a later induction head find 'the token after the earlier copy'.")),
    ]
    report = ModelReport(spec, parity, lenses, scan, views)
    for index, lens in enumerate(lenses):
        report.figures[f"lens_{index}_top1.png"] = figure_png(plot_lens_top1(lens))
        report.figures[f"lens_{index}_rank.png"] = figure_png(plot_lens_rank(lens))
        report.figures[f"lens_{index}_kl.png"] = figure_png(plot_lens_kl(lens))
    for name in ["induction", "previous_token", "duplicate_token", "copying"]:
        report.figures[f"heads_{name}.png"] = figure_png(plot_head_scores(scan, name))
    report.figures["loss_by_position.png"] = figure_png(plot_loss_by_position(scan))
    step(1)
    return report


def figure_html(path: Path, alt: str) -> str:
    """An <img> holding the PNG itself (a data URI), so the page needs no other file."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img class="mechlab-figure" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def parity_html(report: ParityReport) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(c.name)}</td><td>{c.max_abs_err:.2e}</td><td>{c.max_rel_err:.2e}</td>"
        f"<td style=\"color:{'green' if c.passed else 'red'}\">{'ok' if c.passed else 'FAIL'}</td></tr>"
        for c in report.components)
    verdict = "all components agree" if report.passed else f"first difference at {report.first_failure}"
    return (f"<p><b>{verdict}</b> (atol={report.atol}, rtol={report.rtol})</p><details><summary>all "
            f"{len(report.components)} components</summary><table><tr><th>component</th><th>max abs err</th>"
            f"<th>max rel err</th><th></th></tr>{rows}</table></details>")


def write_report(specs: list[str], out: str | Path, *, seq_len: int = 50, batch: int = 10) -> Path:
    """Build every model's report (with a progress bar), then write report.html, PNGs and JSON."""
    steps = 5 * len(specs) + 1
    with tqdm(total=steps, desc="mechlab report") as progress:
        reports = [build_report(spec, seq_len=seq_len, batch=batch, progress=progress) for spec in specs]
        mosaic = figure_png(plot_induction_mosaic([r.scan for r in reports])) if len(reports) > 1 else None
        out = ensure_writable_dir(out)
        items = []
        summary = {}
        for report in reports:
            directory = ensure_writable_dir(out / model_slug(report.spec)) if len(reports) > 1 else out
            paths = {name: write_bytes(directory / name, png) for name, png in report.figures.items()}
            write_json(directory / "parity.json", report.parity.to_json())
            write_json(directory / "heads.json", report.scan.to_json())
            write_json(directory / "lens.json", [lens.to_json() for lens in report.lenses])
            items += model_section(report, paths)
            summary[report.spec] = {
                "parity_passed": report.parity.passed,
                "induction_heads": [list(h) for h in report.scan.heads_above("induction", 0.4)],
                "loss_first_half": report.scan.loss_first_half, "loss_second_half": report.scan.loss_second_half,
                "lens_targets": [{"prompt": lens.prompt, "target": lens.target_token,
                                  "first_top1_layer": lens.first_top1_layer} for lens in report.lenses],
            }
        if mosaic is not None:
            path = write_bytes(out / "induction_mosaic.png", mosaic)
            items.append(("Induction scores of all models side by side, by relative depth.", figure_html(path, "mosaic")))
        write_json(out / "report.json", summary)
        page = save_html(items, out / "report.html", title=f"mechlab report: {', '.join(specs)}")
        progress.update(1)
    return page


def model_section(report: ModelReport, paths: dict) -> list:
    spec, scan = report.spec, report.scan
    items = [(f"{spec}: the from-scratch Transformer (mechlab.model) against TransformerLens's HookedTransformer "
              f"on {PARITY_PROMPT!r}, component by component: every intermediate value of the readable "
              "reimplementation matches the library's.", f"<h2>{html.escape(spec)}</h2>" + parity_html(report.parity))]
    for index, lens in enumerate(report.lenses):
        where = (f"' {lens.target_token.strip()}' becomes the top-1 prediction at row {lens.first_top1_layer} "
                 f"({lens.layers[lens.first_top1_layer]})" if lens.first_top1_layer is not None else
                 "the target is not the final top-1" if lens.target_token else "")
        items.append((f"Logit lens on {lens.prompt!r}: each cell decodes the residual stream at one layer (row, "
                      f"embedding at the bottom) and position (column) through the final norm and unembedding and "
                      f"shows the most likely next token, shaded by its probability. {where}.",
                      figure_html(paths[f"lens_{index}_top1.png"], "logit lens top-1")))
    items.append(("The same lens for the first prompt as the rank of the actual next token (left: small is good) "
                  "and as KL divergence from the final distribution (right): how far each layer is from the answer.",
                  figure_html(paths["lens_0_rank.png"], "rank") + figure_html(paths["lens_0_kl.png"], "kl")))
    heads = ", ".join(f"L{l}H{h} ({s:.2f})" for l, h, s in scan.heads_above("induction", 0.4)[:6]) or "none above 0.4"
    items.append((f"Induction scores of every head on [BOS] + r + r (len(r) = {scan.seq_len}, {scan.batch} "
                  f"sequences): the mean attention from the second copy to the token after the earlier copy. "
                  f"Induction heads: {heads}.", figure_html(paths["heads_induction.png"], "induction scores")))
    items.append(("Previous-token scores (attention to the position before) and OV-circuit copying scores, which "
                  "together with induction make up the induction circuit.",
                  figure_html(paths["heads_previous_token.png"], "previous-token") + figure_html(paths["heads_copying.png"], "copying")))
    items.append((f"Next-token loss along the repeated sequences: {scan.loss_first_half:.2f} nats on the random first "
                  f"copy, {scan.loss_second_half:.2f} on the repeat, which the induction heads make predictable.",
                  figure_html(paths["loss_by_position.png"], "loss by position")))
    return items + report.views

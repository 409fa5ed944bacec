"""The one-command report: parity, logit lens, head scan, attention views, circuits read from the
weights, token attribution and causal checks (head ablation, activation patching, direct logit
attribution) of one or more models on one self-contained offline page, with the figures and JSON
beside it."""

from dataclasses import dataclass, field
from pathlib import Path

from mechlab.analysis.ablation import AblationStudy, ablation_study
from mechlab.analysis.attribution import (
    RandomizationCheck,
    TokenAttribution,
    attribute,
    randomization_check,
)
from mechlab.analysis.circuits import Circuits, InductionCircuit, circuits, induction_circuit
from mechlab.analysis.dla import AttributionResult, logit_attribution
from mechlab.analysis.heads import HeadScan, scan_heads
from mechlab.analysis.lens import LensResult, logit_lens, resolve_target
from mechlab.analysis.patching import PatchResult, patch
from mechlab.analysis.tokens import to_tokens
from mechlab.defaults import ATTRIBUTION_METHODS, INDUCTION_THRESHOLD
from mechlab.errors import InputError
from mechlab.io import figure_png, json_text, write_files
from mechlab.models.loading import load_model
from mechlab.present.attribution import attribution_section
from mechlab.present.circuits import circuits_section
from mechlab.present.dla import dla_caption, plot_dla_heads, plot_dla_layers
from mechlab.present.heads import (
    ablation_caption,
    head_figures,
    induction_caption,
    induction_views,
    loss_caption,
    mosaic_png,
    plot_ablation,
)
from mechlab.present.lens import lens_caption, lens_figures
from mechlab.present.page import Files, Heading, View, image_html, model_files, render_page
from mechlab.present.parity import parity_html
from mechlab.present.patching import patch_caption, plot_patch_grid
from mechlab.progress import progress_bar
from mechlab.scratch.model import Transformer
from mechlab.scratch.parity import ParityReport, compare
from mechlab.workflows.attention import induction_patterns

LENS_PROMPTS = [  # (prompt, target) pairs; the first two are classics of the logit-lens posts
    ("The capital of France is", " Paris"),
    ("The Eiffel Tower is located in the city of", " Paris"),
    ("When Mary and John went to the store, John gave a drink to", " Mary"),
]
PARITY_PROMPT = "The quick brown fox jumps over the lazy dog."
# The causal section: an indirect-object pair (Wang et al. 2022) with the names swapped, and how
# many top induction heads to ablate.
IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPTED = "When John and Mary went to the store, Mary gave a drink to"
IOI_ANSWER, IOI_WRONG = " Mary", " John"
ABLATE_TOP = 3
# Token attribution: every method on the first lens prompt; integrated gradients and occlusion from
# the ' the' baseline, along which SmolLM2's integrand is smooth (from the zero embedding no prompt
# of the benchmark's 57 is complete to 1% at 64 steps: docs/attribution_methods.json). The
# randomization check runs for three methods (a gradient, a path integral, the occlusion reference),
# the blocks re-initialised a third of the model at a time, to keep the report to minutes.
ATTRIBUTION_BASELINE = " the"
RANDOMIZED_METHODS = ("saliency", "integrated_gradients", "occlusion")


@dataclass
class ModelReport:
    spec: str
    parity: ParityReport
    lenses: list[LensResult]
    scan: HeadScan
    views: list[View] = field(default_factory=list)
    figures: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG bytes
    ablation: AblationStudy | None = None
    patching: PatchResult | None = None
    dla: AttributionResult | None = None
    attributions: list[TokenAttribution] = field(default_factory=list)
    randomization: list[RandomizationCheck] = field(default_factory=list)
    attribution_page: tuple[list, Files] = field(default_factory=lambda: ([], {}))  # made once
    tuned_lens: LensResult | None = None  # the first prompt through the model's cached tuned lens
    circuits: Circuits | None = None
    induction_circuit: InductionCircuit | None = None
    circuits_page: tuple[list, Files] = field(default_factory=lambda: ([], {}))  # made once
    skipped: list[str] = field(default_factory=list)  # what could not run, and why

    def summary(self) -> dict:
        return {
            "parity_passed": self.parity.passed,
            "induction_heads": [
                list(h) for h in self.scan.heads_above("induction", INDUCTION_THRESHOLD)
            ],
            "loss_first_half": self.scan.loss_first_half,
            "loss_second_half": self.scan.loss_second_half,
            "lens_targets": [
                {
                    "prompt": lens.prompt,
                    "target": lens.target_token,
                    "first_top1_layer": lens.first_top1_layer,
                }
                for lens in self.lenses
            ],
            "ablation": self.ablation.to_json() if self.ablation else None,
            "patching_top": self.patching.top(5) if self.patching else None,
            "dla_top_heads": self.dla.top_heads(5) if self.dla else None,
            "attribution_top": {a.method: a.top(1)[0] for a in self.attributions} or None,
            "randomization_passes": {c.method: c.passes for c in self.randomization} or None,
            "induction_circuit": self.induction_circuit.to_json(3)
            if self.induction_circuit
            else None,
            "skipped": self.skipped,
        }

    def files(self) -> Files:
        heads = self.scan.to_json()
        heads["ablation"] = self.ablation.to_json() if self.ablation else None
        files: Files = {
            **self.figures,
            "parity.json": json_text(self.parity.to_json()),
            "heads.json": json_text(heads),
            "lens.json": json_text(
                [lens.to_json() for lens in self.lenses]
                + ([self.tuned_lens.to_json()] if self.tuned_lens else [])
            ),
        }
        if self.patching:
            files["patch.json"] = json_text(self.patching.to_json())
        if self.dla:
            files["dla.json"] = json_text(self.dla.to_json())
        files.update(self.attribution_page[1])
        files.update(self.circuits_page[1])
        if self.circuits:
            circuits_json = self.circuits.to_json()
            if self.induction_circuit:
                circuits_json["induction_circuit"] = self.induction_circuit.to_json()
            files["circuits.json"] = json_text(circuits_json)
        return files


def build_report(
    spec: str,
    *,
    seq_len: int = 50,
    batch: int = 10,
    progress=None,
    device: str = "auto",
    dtype: str = "float32",
) -> ModelReport:
    """Run every analysis on one model; nothing is written."""
    step = progress.update if progress is not None else (lambda n: None)
    model = load_model(spec, device=device, dtype=dtype)
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
    step(1)
    scan = scan_heads(model, seq_len=min(seq_len, (model.cfg.n_ctx - 1) // 2), batch=batch)
    step(1)
    views = induction_views(scan, induction_patterns(model, scan))
    report = ModelReport(spec, parity, lenses, scan, views)
    report.circuits = circuits(model)
    report.induction_circuit = induction_circuit(model, scan, circuits_result=report.circuits)
    report.circuits_page = circuits_section(report.circuits, report.induction_circuit)
    tuned_lens_check(model, report)
    token_attribution(model, report)
    causal_checks(model, report)
    for index, lens in enumerate(lenses):
        report.figures.update(lens_figures(lens, prefix=f"lens_{index}"))
    report.figures.update(
        head_figures(scan, ["induction", "previous_token", "duplicate_token", "copying"])
    )
    step(1)
    return report


def tuned_lens_check(model, report: ModelReport) -> None:
    """The first lens prompt through the tuned lens cached for this model (`mechlab lens --tuned
    auto --train-if-missing` or `mechlab tune-lens` make one); none is trained here."""
    from mechlab.analysis.tuned_lens import cached_lens

    lens = cached_lens(model)
    if lens is None:
        report.skipped.append(
            f"the tuned lens: none is cached for {report.spec} (make one with `mechlab lens "
            f"--model {report.spec} --prompt 'The capital of France is' --tuned auto "
            "--train-if-missing --out DIR`, about 15 minutes on a 2-core CPU)"
        )
        return
    prompt, _ = LENS_PROMPTS[0]
    first = report.lenses[0]
    report.tuned_lens = logit_lens(model, prompt, target=first.target_id, lens=lens)
    report.figures.update(lens_figures(report.tuned_lens, prefix="lens_tuned"))


def token_attribution(model, report: ModelReport) -> None:
    """Which tokens of the first lens prompt drive its answer's logit, by every method, and the
    randomization check of RANDOMIZED_METHODS; skipped, with the reason, where the answer or the
    baseline is not one token."""
    prompt, answer = LENS_PROMPTS[0]
    options: dict = dict(answer=answer, baseline=ATTRIBUTION_BASELINE)
    try:
        report.attributions = [
            attribute(model, prompt, method=method, **options) for method in ATTRIBUTION_METHODS
        ]
    except InputError as error:
        report.skipped.append(f"token attribution: {error}")
        return
    every = max(1, model.cfg.n_layers // 3)
    report.randomization = [
        randomization_check(model, prompt, method=method, every=every, **options)
        for method in RANDOMIZED_METHODS
    ]
    report.attribution_page = attribution_section(report.attributions, report.randomization)


def causal_checks(model, report: ModelReport) -> None:
    """Ablate the top induction heads; patch heads and attribute the logit difference on the
    indirect-object pair, where the tokenizer makes the names single tokens. What cannot run is
    recorded in `report.skipped` with the reason."""
    try:
        report.ablation = ablation_study(model, report.scan, ABLATE_TOP)
        report.figures["ablation.png"] = figure_png(plot_ablation(report.ablation))
    except InputError as error:
        report.skipped.append(f"head ablation: {error}")
    try:
        report.patching = patch(
            model, IOI_CLEAN, IOI_CORRUPTED, answer=IOI_ANSWER, wrong=IOI_WRONG, over="heads"
        )
        report.dla = logit_attribution(model, IOI_CLEAN, answer=IOI_ANSWER, wrong=IOI_WRONG)
    except InputError as error:
        report.skipped.append(f"patching and direct logit attribution: {error}")
        return
    report.figures["patch_heads.png"] = figure_png(plot_patch_grid(report.patching))
    report.figures["dla_heads.png"] = figure_png(plot_dla_heads(report.dla))
    report.figures["dla_layers.png"] = figure_png(plot_dla_layers(report.dla))


def write_report(
    specs: list[str],
    out: str | Path,
    *,
    seq_len: int = 50,
    batch: int = 10,
    device: str = "auto",
    dtype: str = "float32",
) -> Path:
    """Build every model's report (with a progress bar), then write report.html, the PNGs and the
    JSON files together: the page is made from the figures in memory, and nothing is written
    until everything is computed."""
    several = len(specs) > 1
    with progress_bar(total=5 * len(specs) + 1, desc="mechlab report") as progress:
        reports = [
            build_report(
                spec, seq_len=seq_len, batch=batch, progress=progress, device=device, dtype=dtype
            )
            for spec in specs
        ]
        files: Files = {}
        items: list = []
        for report in reports:
            files.update(model_files(report.spec, report.files(), several=several))
            items += model_section(report)
        if several:
            files["induction_mosaic.png"] = mosaic = mosaic_png([r.scan for r in reports])
            items.append(Heading("All models side by side"))
            items.append(
                (
                    "Induction scores of all models side by side, by relative depth.",
                    image_html(mosaic, "mosaic"),
                )
            )
        files["report.json"] = json_text({report.spec: report.summary() for report in reports})
        files["report.html"] = render_page(items, title=f"mechlab report: {', '.join(specs)}")
        write_files(out, files)
        progress.update(1)
    return Path(out) / "report.html"


def model_section(report: ModelReport) -> list:
    spec, scan, figures = report.spec, report.scan, report.figures
    items = [
        Heading(spec),
        Heading("From scratch against the library", 3),
        (
            f"{spec}: the from-scratch Transformer (mechlab.scratch.model) against "
            f"TransformerLens's HookedTransformer on {PARITY_PROMPT!r}, component by component: "
            "every intermediate value of the readable reimplementation matches the library's.",
            parity_html(report.parity),
        ),
        Heading("Logit lens", 3),
    ]
    for index, lens in enumerate(report.lenses):
        items.append(
            (lens_caption(lens), image_html(figures[f"lens_{index}_top1.png"], "logit lens top-1"))
        )
    if report.tuned_lens:
        items.append(Heading("Tuned lens", 3))
        items.append(
            (
                "The logit lens (left) and the tuned lens (right) on the same prompt: the tuned "
                "lens translates each layer's residual stream with an affine map trained on "
                "Wikipedia text before decoding it (Belrose et al. 2023).",
                image_html(figures["lens_0_top1.png"], "logit lens")
                + image_html(figures["lens_tuned_top1.png"], "tuned lens"),
            )
        )
    items.append(
        (
            "The same lens for the first prompt as the rank of the actual next token (left: "
            "small is good) and as KL divergence from the final distribution (right): how far "
            "each layer is from the answer.",
            image_html(figures["lens_0_rank.png"], "rank")
            + image_html(figures["lens_0_kl.png"], "kl"),
        )
    )
    items.append(Heading("Head scores", 3))
    items.append(
        (induction_caption(scan), image_html(figures["heads_induction.png"], "induction scores"))
    )
    items.append(
        (
            "Previous-token scores (attention to the position before) and OV-circuit copying "
            "scores, which together with induction make up the induction circuit.",
            image_html(figures["heads_previous_token.png"], "previous-token")
            + image_html(figures["heads_copying.png"], "copying"),
        )
    )
    items.append(
        (loss_caption(scan), image_html(figures["loss_by_position.png"], "loss by position"))
    )
    items.append(Heading("The induction circuit's attention", 3))
    items += report.views
    if report.circuits:
        items.append(Heading("Circuits from the weights", 3))
        items += report.circuits_page[0]
    if report.attributions:
        items.append(Heading("Token attribution", 3))
        items += report.attribution_page[0]
    if report.ablation or report.patching or report.dla or report.skipped:
        items.append(Heading("Causal checks", 3))
    if report.ablation:
        items.append(
            (ablation_caption(report.ablation), image_html(figures["ablation.png"], "ablation"))
        )
    if report.patching:
        items.append(
            (
                patch_caption(report.patching),
                image_html(figures["patch_heads.png"], "patching over heads"),
            )
        )
    if report.dla:
        items.append(
            (
                dla_caption(report.dla),
                image_html(figures["dla_heads.png"], "direct logit attribution per head")
                + image_html(figures["dla_layers.png"], "direct logit attribution per layer"),
            )
        )
    for reason in report.skipped:
        items.append((f"{spec}: skipped {reason}", ""))
    return items

"""Token attribution on SmolLM2, the indirect-object prompt (15 tokens), best of 3, side by side:
one plain forward pass; saliency; integrated gradients at 32 and 64 steps; Captum's
LayerIntegratedGradients on the embedding layer at the same steps (``internal_batch_size`` = the
steps, as Captum's docs advise for one batch per call), with the same baseline (' the' at every
position, BOS kept) and the same Gauss-Legendre nodes (``quadrature="gauss_legendre"``), so both
compute the same numbers. Then the cost of mechlab's default, the adaptive rule (complete to 1%
within its budget): its nodes, time and completeness gap beside one 64-node rule's, from ' the'
and from the zero embedding, on this prompt and on 'Big Ben is in the city of' (' London' vs
' Paris'), where one rule from ' the' misses completeness by 14%.

Goals: saliency <= 3x a forward; integrated gradients at 32 steps <= 33x a forward; faster than
Captum at the same steps, with the same scores to 1e-4 (relative to the largest); the adaptive
rule complete to 1% on every row (its cost is reported, not bounded)."""

import time
import warnings

import torch
from captum.attr import LayerIntegratedGradients

from benchmarks.common import interleaved_best_times, print_table
from mechlab.analysis.attribution import attribute
from mechlab.errors import MechlabWarning
from mechlab.models.loading import load_model

PROMPT = "When Mary and John went to the store, John gave a drink to"
BASELINE = " the"


def main(repeat: int = 3) -> None:
    warnings.simplefilter("ignore", MechlabWarning)  # completeness is the method table's business
    model = load_model("smollm2-135m")
    tokens = model.to_tokens(PROMPT)
    mary, john = model.to_single_token(" Mary"), model.to_single_token(" John")
    baseline_tokens = torch.full_like(tokens, model.to_single_token(BASELINE))
    baseline_tokens[:, 0] = tokens[:, 0]

    def logit_diff(ids):
        logits = model(ids)[:, -1]
        return logits[:, mary] - logits[:, john]

    captum = LayerIntegratedGradients(logit_diff, model.embed)

    def forward():
        with torch.inference_mode():
            return model(tokens)

    def ours(method: str, steps: int = 64):
        return lambda: attribute(
            model, PROMPT, answer=" Mary", wrong=" John", method=method, steps=steps,
            baseline=BASELINE, quadrature="gauss_legendre",
        )  # fmt: skip

    def theirs(steps: int):
        return lambda: captum.attribute(
            tokens,
            baselines=baseline_tokens,
            n_steps=steps,
            method="gausslegendre",
            internal_batch_size=steps,
        )[0].sum(-1)

    contenders = {
        "one forward": forward,
        "saliency": ours("saliency"),
        "integrated gradients, 32 steps": ours("integrated_gradients", 32),
        "integrated gradients, 64 steps": ours("integrated_gradients", 64),
        "Captum LayerIntegratedGradients, 32": theirs(32),
        "Captum LayerIntegratedGradients, 64": theirs(64),
    }
    times = interleaved_best_times(contenders, repeat=repeat)
    base = times["one forward"]
    rows = [[name, seconds, seconds / base] for name, seconds in times.items()]
    print_table(
        f"Token attribution on smollm2-135m, {tokens.shape[1]} tokens, best of {repeat}",
        ["what", "seconds", "x one forward"],
        rows,
    )
    agreement = []
    for steps in (32, 64):
        mine = ours("integrated_gradients", steps)().scores.double()
        reference = theirs(steps)().detach().double()
        gap = (mine - reference).abs().max().item() / reference.abs().max().item()
        speedup = (
            times[f"Captum LayerIntegratedGradients, {steps}"]
            / times[f"integrated gradients, {steps} steps"]
        )
        agreement.append([f"{steps} steps", f"{gap:.1e}", speedup])
    print_table(
        "Integrated gradients against Captum (same function, baseline and nodes)",
        ["steps", "max |ours - Captum| / max |Captum|", "Captum time / ours"],
        agreement,
    )
    costs, complete = [], True
    cases = [
        (PROMPT, " Mary", " John"),
        ("Big Ben is in the city of", " London", " Paris"),
    ]
    for prompt, answer, wrong in cases:
        for baseline in (BASELINE, "zero"):
            row = [f"{prompt[:20]}... from {baseline!r}"]
            for quadrature in ("gauss_legendre", "adaptive"):
                start = time.perf_counter()
                result = attribute(
                    model, prompt, answer=answer, wrong=wrong, baseline=baseline,
                    quadrature=quadrature,
                )  # fmt: skip
                seconds = time.perf_counter() - start
                row += [result.steps, f"{result.relative_delta:.2%}", seconds]
            complete = complete and float(row[-2].rstrip("%")) < 1
            costs.append(row)
    print_table(
        "Integrated gradients: one 64-node rule against the adaptive rule (the default)",
        ["prompt", "nodes", "gap", "seconds", "adaptive nodes", "gap", "seconds"],
        costs,
    )
    print(
        f"goals: saliency {times['saliency'] / base:.1f}x (<= 3x), IG-32 "
        f"{times['integrated gradients, 32 steps'] / base:.1f}x (<= 33x), faster than Captum "
        f"and within 1e-4: {all(float(r[1]) <= 1e-4 and r[2] > 1 for r in agreement)}; "
        f"adaptive complete to 1% on every row: {complete}"
    )


if __name__ == "__main__":
    main()

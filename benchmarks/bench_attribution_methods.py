"""The attribution method table on SmolLM2 over the fixed prompt set (mechlab.analysis.attribution.
attribution_prompts: 57 prompts, factual recall, indirect objects, induction-style repeats), each
attributing logit(answer) - logit(wrong):

- completeness (integrated gradients): the share of prompts whose |delta| is under 1% of
  target - baseline_target at 64 steps, from the zero baseline and from ' the';
- randomization: the Spearman correlation with the trained model's |scores| once every block is
  re-initialised (the verdict's stage; a method passes below 0.3), averaged over a subset of the
  prompts (every 5 blocks per stage, to keep the run to minutes);
- comprehensiveness and sufficiency (AOPC over 1, 5, 10, 20, 50% of the tokens, zero baseline),
  each minus the same for random rankings, with 95% bootstrap intervals over the prompts;
- cost: seconds per prompt.

Writes docs/attribution_methods.json and docs/attribution_methods.png (the README shows both):
python -m benchmarks.bench_attribution_methods [--prompts N]. About 20 minutes on 2 CPU cores."""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import print_table
from mechlab.analysis.attribution import (
    COMPLETENESS_TOLERANCE,
    METHODS,
    attribute,
    attribution_prompts,
    faithfulness,
    randomization_check,
)
from mechlab.errors import MechlabWarning
from mechlab.io import figure_png
from mechlab.models.loading import load_model
from mechlab.present.figure import new_figure

DOCS = Path(__file__).resolve().parent.parent / "docs"


def completeness(model, prompts, baseline: str) -> list[float]:
    return [
        attribute(
            model, p["prompt"], answer=p["answer"], wrong=p["wrong"], baseline=baseline
        ).relative_delta
        for p in prompts
    ]


def figure(table: dict):
    fig = new_figure(figsize=(11, 4.8))
    left, right = fig.subplots(1, 2)
    methods = list(table["methods"])
    y = np.arange(len(methods))
    for offset, key, label, colour in [
        (-0.2, "comprehensiveness_minus_random", "comprehensiveness - random (higher)", "#b2182b"),
        (0.2, "sufficiency_minus_random", "sufficiency - random (lower)", "#2166ac"),
    ]:
        values = [table["methods"][m]["faithfulness"][key] for m in methods]
        low = [table["methods"][m]["faithfulness"]["intervals"][key][0] for m in methods]
        high = [table["methods"][m]["faithfulness"]["intervals"][key][1] for m in methods]
        errors = [np.subtract(values, low), np.subtract(high, values)]
        left.barh(y + offset, values, height=0.4, xerr=errors, color=colour, label=label)
    left.axvline(0, color="gray", linewidth=0.6)
    left.set_yticks(y, methods, fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("logit difference (AOPC), 95% bootstrap interval")
    left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    left.set_title(f"Faithfulness over {table['prompts']} prompts", fontsize=9)
    for method in methods:
        curve = table["methods"][method]["randomization"]
        right.plot(
            range(len(curve["stages"])), curve["mean_correlations"], marker=".", label=method
        )
    stages = table["methods"][methods[0]]["randomization"]["stages"]
    right.axhline(0.3, color="gray", linestyle="--", linewidth=0.8)
    right.set_xticks(range(len(stages)), stages, fontsize=7)
    right.set_ylim(-0.6, 1.05)
    right.set_xlabel("randomized down to (from the top)")
    right.set_ylabel("Spearman correlation of |scores|")
    right.set_title(
        f"Cascading randomization, mean over {table['randomization_prompts']} prompts", fontsize=9
    )
    right.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4)
    fig.suptitle("smollm2-135m: token attribution methods", fontsize=10)
    fig.tight_layout()
    return fig


def main(n_prompts: int | None = None, n_randomized: int = 6) -> None:
    warnings.simplefilter("ignore", MechlabWarning)
    model = load_model("smollm2-135m")
    prompts = attribution_prompts()[:n_prompts]
    kinds = sorted({p["kind"] for p in prompts})
    subset = []
    for kind in kinds:  # the same number of each kind
        subset += [p for p in prompts if p["kind"] == kind][: n_randomized // len(kinds)]
    table = {"model": "smollm2-135m", "prompts": len(prompts), "methods": {}}
    table["randomization_prompts"] = len(subset)
    gaps = {b: completeness(model, prompts, b) for b in ("zero", " the")}
    table["completeness"] = {
        baseline: {
            "share_complete": float(np.mean([g < COMPLETENESS_TOLERANCE for g in values])),
            "median_relative_delta": float(np.median(values)),
        }
        for baseline, values in gaps.items()
    }
    rows = []
    for method in METHODS:
        start = time.perf_counter()
        faith = faithfulness(
            model,
            [p["prompt"] for p in prompts],
            answers=[p["answer"] for p in prompts],
            wrongs=[p["wrong"] for p in prompts],
            method=method,
            random_rankings=3,
            progress=True,
        )
        checks = [
            randomization_check(
                model, p["prompt"], answer=p["answer"], wrong=p["wrong"], method=method, every=5
            )
            for p in subset
        ]
        correlations = np.array([c.correlations for c in checks])
        summary = faith.to_json()
        del summary["per_prompt"]
        summary["comprehensiveness_minus_random"] = (
            summary["comprehensiveness"] - summary["random_comprehensiveness"]
        )
        summary["sufficiency_minus_random"] = summary["sufficiency"] - summary["random_sufficiency"]
        above = correlations[:, checks[0].stages.index("embed") - 1]
        table["methods"][method] = {
            "faithfulness": summary,
            "randomization": {
                "stages": checks[0].stages,
                "mean_correlations": np.nanmean(correlations, 0).tolist(),
                "above_embeddings": float(np.nanmean(above)),
                "passes": int((above < 0.3).sum()),
            },
            "seconds_per_prompt": faith.seconds,
            "wall_seconds": time.perf_counter() - start,
        }
        m = table["methods"][method]
        rows.append(
            [
                method,
                summary["comprehensiveness_minus_random"],
                summary["sufficiency_minus_random"],
                m["randomization"]["above_embeddings"],
                f"{m['randomization']['passes']}/{len(subset)}",
                faith.seconds,
            ]
        )
    print_table(
        f"Token attribution methods on smollm2-135m, {len(prompts)} prompts",
        ["method", "compr. - random", "suff. - random", "rand. corr.", "passes", "s / prompt"],
        rows,
    )
    for baseline, values in table["completeness"].items():
        print(
            f"integrated gradients at 64 steps from {baseline!r}: complete to 1% on "
            f"{values['share_complete']:.0%} of prompts, median gap "
            f"{values['median_relative_delta']:.1%}"
        )
    DOCS.mkdir(exist_ok=True)
    (DOCS / "attribution_methods.json").write_text(json.dumps(table, indent=1) + "\n")
    (DOCS / "attribution_methods.png").write_bytes(figure_png(figure(table)))
    print(f"wrote {DOCS / 'attribution_methods.json'} and attribution_methods.png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument(
        "--redraw", action="store_true", help="redraw the figure from the saved JSON only"
    )
    args = parser.parse_args()
    if args.redraw:
        table = json.loads((DOCS / "attribution_methods.json").read_text())
        (DOCS / "attribution_methods.png").write_bytes(figure_png(figure(table)))
    else:
        torch.set_grad_enabled(True)
        main(args.prompts)

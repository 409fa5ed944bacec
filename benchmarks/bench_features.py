"""Features on SmolLM2, on this CPU.

1. The neuron pass (`top_activations`, layer 15's MLP, k = 20) against a plain forward pass over
   the same tokens that stops at the same layer (goal: <= 1.3x), and with every layer recorded
   against a whole forward pass; best of 3, side by side.
2. Caching a layer's activations: tokens per second with the model in float32 and in bfloat16.
3. The whole `mechlab sae train` job on layer 15's residual stream (resid_post), 8 x 576 latents,
   k = 32, on the corpus's training tokens, 3 epochs: seconds for caching, training and the
   evaluation, and mechlab's metrics on held-out text. Goals: fraction of variance explained
   >= 0.75, loss recovered >= 85% against mean-ablation, dead latents <= 10%, all of it <= 15
   minutes. Pass --quick for a 100k-token run.

4. The data curve (`python -m benchmarks.bench_features --data-curve [--budgets 250000,500000]`):
   the same SAE (8 x 576 latents, k = 32, one epoch) trained on the first N tokens of the "english"
   corpus (its sources interleaved, so every budget samples all of them) and measured on its
   held-out documents: variance explained, dead latents and loss recovered against N, as a table,
   docs/sae_data_curve.json and docs/sae_data_curve.png. Each budget costs about N / 1,000 seconds
   here (caching, training and a 90-second evaluation).

python -m benchmarks.run features (about 20 minutes)."""

import sys
import time

import torch

from benchmarks.common import interleaved_best_times, print_table
from mechlab.analysis.neurons import sequences, top_activations
from mechlab.analysis.sae import cache_activations, train_sae
from mechlab.analysis.tokens import token_sequences
from mechlab.corpus import load_corpus
from mechlab.models.loading import load_model

LAYER = 15
TOKENS = 16384


def neuron_pass(model, paragraphs) -> None:
    batch = torch.nn.utils.rnn.pad_sequence(sequences(model, paragraphs, TOKENS), batch_first=True)

    def forward(stop: int):
        with torch.inference_mode():
            for chunk in batch.split(max(1, 4096 // batch.shape[1])):
                model(chunk, stop_at_layer=stop)

    times = interleaved_best_times(
        {
            f"forward to layer {LAYER}": lambda: forward(LAYER + 1),
            f"neurons of layer {LAYER}": lambda: top_activations(
                model, paragraphs, layers=[LAYER], tokens=TOKENS
            ),
            "forward, every layer": lambda: forward(model.cfg.n_layers),
            "neurons of every layer": lambda: top_activations(model, paragraphs, tokens=TOKENS),
        },
        repeat=3,
    )
    rows = [
        [f"layer {LAYER}", times[f"forward to layer {LAYER}"], times[f"neurons of layer {LAYER}"]],
        ["every layer", times["forward, every layer"], times["neurons of every layer"]],
    ]
    print_table(
        f"Neuron records over {TOKENS:,} tokens of Wikipedia paragraphs (padded), best of 3",
        ["layers", "forward s", "neuron pass s", "ratio"],
        [[*row, row[2] / row[1]] for row in rows],
    )


def caching(corpus) -> None:
    rows = []
    for dtype in ("float32", "bfloat16"):
        model = load_model("smollm2-135m", dtype=dtype)
        tokens = token_sequences(model, corpus.train[:20])[:128]
        start = time.perf_counter()
        cache_activations(model, tokens, LAYER, "resid_post")
        seconds = time.perf_counter() - start
        rows.append([dtype, tokens.numel(), seconds, tokens.numel() / seconds])
    print_table(
        f"Caching layer {LAYER}'s resid_post (the forward pass stops there)",
        ["model dtype", "tokens", "seconds", "tokens / s"],
        rows,
    )


def sae_run(model, corpus, quick: bool) -> None:
    start = time.perf_counter()
    sae = train_sae(
        model,
        corpus.train,
        layer=LAYER,
        tokens=100_000 if quick else None,
        held_out=corpus.held_out,
        progress=True,
        corpus=corpus.manifest(),
    )
    total = time.perf_counter() - start
    m, manifest = sae.metrics, sae.manifest
    print_table(
        f"SAE on smollm2-135m layer {LAYER} resid_post: {sae.width} latents, k={sae.k}, "
        f"{manifest['tokens']:,} tokens x {manifest['epochs']} epochs",
        ["measure", "value", "goal"],
        [
            ["fraction of variance explained (held out)", f"{m.variance_explained:.3f}", ">= 0.75"],
            ["loss recovered vs mean-ablation", f"{m.recovered_vs_mean:.1%}", ">= 85%"],
            ["loss recovered vs zero-ablation", f"{m.recovered_vs_zero:.1%}", ""],
            ["dead latents (held out)", f"{m.dead_fraction:.1%}", "<= 10%"],
            ["L0", f"{m.l0:.1f}", "32 (TopK)"],
            ["clean / spliced loss (nats)", f"{m.clean_loss:.3f} / {m.spliced_loss:.3f}", ""],
            ["KL(clean || spliced)", f"{m.kl:.3f}", ""],
            ["caching s", f"{manifest['caching_seconds']:.0f}", ""],
            ["training s", f"{manifest['training_seconds']:.0f}", ""],
            [
                "training tokens / s",
                f"{manifest['steps'] * manifest['batch'] / manifest['training_seconds']:,.0f}",
                "",
            ],
            ["evaluation s", f"{manifest['evaluation_seconds']:.0f}", ""],
            ["all of it, s", f"{total:.0f}", "<= 900"],
        ],
    )


DATA_BUDGETS = (500_000, 1_000_000, 2_000_000, 4_000_000)


def data_curve(budgets: list[int]) -> None:
    import json
    from pathlib import Path

    from mechlab.io import save_figure
    from mechlab.present.figure import new_figure

    corpus = load_corpus("english")
    model = load_model("smollm2-135m")
    rows, points = [], []
    for tokens in budgets:
        sae = train_sae(
            model,
            corpus.train,
            layer=LAYER,
            tokens=tokens,
            epochs=1,
            held_out=corpus.held_out,
            progress=True,
            corpus=corpus.manifest(),
        )
        m, manifest = sae.metrics, sae.manifest
        seconds = sum(manifest[f"{part}_seconds"] for part in ("caching", "training", "evaluation"))
        point = {
            "tokens": tokens,
            "variance_explained": m.variance_explained,
            "dead_fraction": m.dead_fraction,
            "loss_recovered_vs_mean_ablation": m.recovered_vs_mean,
            "seconds": seconds,
        }
        points.append(point)
        rows.append(
            [
                f"{tokens:,}",
                f"{m.variance_explained:.3f}",
                f"{m.dead_fraction:.1%}",
                f"{m.recovered_vs_mean:.1%}",
                f"{seconds:.0f}",
            ]
        )
        print_table(
            f"SAE data curve: smollm2-135m layer {LAYER}, {sae.width} latents, k={sae.k}, "
            "one epoch of the english corpus, measured on its held-out documents",
            ["training tokens", "variance explained", "dead", "loss recovered (mean)", "s"],
            rows,
        )
    docs = Path(__file__).resolve().parents[1] / "docs"
    (docs / "sae_data_curve.json").write_text(json.dumps(points, indent=1) + "\n")
    figure = new_figure(figsize=(12, 3.5), layout="constrained")
    axes = figure.subplots(1, 3)
    for axis, key, goal, title in [
        (axes[0], "variance_explained", 0.80, "fraction of variance explained"),
        (axes[1], "dead_fraction", 0.05, "dead latents"),
        (axes[2], "loss_recovered_vs_mean_ablation", 0.90, "loss recovered vs mean-ablation"),
    ]:
        axis.plot([p["tokens"] for p in points], [p[key] for p in points], marker="o")
        axis.axhline(goal, color="grey", linestyle="--", label=f"goal {goal:g}")
        axis.set_xscale("log")
        axis.set_xlabel("training tokens (one epoch)")
        axis.set_title(title)
        axis.legend()
    save_figure(figure, docs / "sae_data_curve.png")


def main(quick: bool = False) -> None:
    corpus = load_corpus("wikipedia")
    model = load_model("smollm2-135m")
    paragraphs = [p for d in corpus.held_out for p in d.split("\n\n")]
    neuron_pass(model, paragraphs)
    caching(corpus)
    sae_run(model, corpus, quick)


if __name__ == "__main__":
    if "--data-curve" in sys.argv:
        budgets = DATA_BUDGETS
        if "--budgets" in sys.argv:
            budgets = tuple(int(b) for b in sys.argv[sys.argv.index("--budgets") + 1].split(","))
        data_curve(list(budgets))
    else:
        main("--quick" in sys.argv)

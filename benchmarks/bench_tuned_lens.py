"""The tuned lens on SmolLM2 (mechlab.analysis.tuned_lens), trained on the Wikipedia corpus on this
CPU: tokens per second and minutes for the default budget, held-out KL per layer against the logit
lens (goal: lower at every layer, the mean over layers at most half the logit lens's, in <= 15
minutes), and how close the support-restricted training loss is to the exact KL, side by side on
the same batches."""

import time

import torch

from benchmarks.common import print_table
from mechlab.analysis.tokens import token_sequences
from mechlab.analysis.tuned_lens import (
    DEFAULT_TOKENS,
    REST_SAMPLE,
    SEQ_LEN,
    evaluate,
    layer_inputs_and_final,
    support_kl,
    train_tuned_lens,
)
from mechlab.corpus import load_corpus
from mechlab.models.loading import load_model

EVAL_TOKENS = 4096


def loss_against_exact(model, lens, texts, batches: int = 2) -> list[list[object]]:
    """The training loss (sampled rest), the same with the rest's mass exact, and the exact KL."""
    sequences = token_sequences(model, texts)[: 4 * batches]
    generator = torch.Generator().manual_seed(0)
    rows = []
    with torch.no_grad():
        for batch in sequences.split(4):
            residuals, final = layer_inputs_and_final(model, batch)
            translated = lens(residuals)
            sample = torch.randint(0, model.cfg.d_vocab, (REST_SAMPLE,), generator=generator)
            sampled = support_kl(model, translated, final, rest_sample=sample).item()
            restricted = support_kl(model, translated, final, rest_sample=None).item()
            exact = 0.0
            for layer in range(len(translated)):
                log_q = model.unembed(model.ln_final(translated[layer])).log_softmax(-1)
                exact += (final.exp() * (final - log_q)).sum(-1).mean().item() / len(translated)
            rows.append([len(rows), sampled, restricted, exact, restricted / exact])
    return rows


def main() -> None:
    model = load_model("smollm2-135m")
    corpus = load_corpus()
    start = time.perf_counter()
    lens = train_tuned_lens(model, corpus.train, tokens=DEFAULT_TOKENS, corpus=corpus.manifest())
    minutes = (time.perf_counter() - start) / 60
    seen = lens.manifest["tokens_seen"]
    evaluation = evaluate(model, lens, corpus.held_out, tokens=EVAL_TOKENS)
    print_table(
        f"tuned lens training on SmolLM2 ({SEQ_LEN}-token sequences of Wikipedia)",
        ["tokens", "minutes", "tokens/s", "<= 15 min"],
        [[seen, minutes, seen / (minutes * 60), "yes" if minutes <= 15 else "NO"]],
    )
    rows = [
        [label, logit, tuned, tuned / logit if logit else float("nan")]
        for label, logit, tuned in zip(
            evaluation.layers, evaluation.logit_kl, evaluation.tuned_kl, strict=True
        )
    ][:-1]
    mean_logit = sum(evaluation.logit_kl[:-1]) / len(rows)
    mean_tuned = sum(evaluation.tuned_kl[:-1]) / len(rows)
    rows.append(["mean", mean_logit, mean_tuned, mean_tuned / mean_logit])
    print_table(
        f"held-out KL(final || lens), nats, {evaluation.tokens:,} tokens: lower at every layer: "
        f"{'yes' if evaluation.tuned_better_everywhere else 'NO'}; mean halved: "
        f"{'yes' if mean_tuned <= mean_logit / 2 else 'NO'}",
        ["row", "logit lens", "tuned lens", "tuned / logit"],
        rows,
    )
    print_table(
        "training loss vs exact KL on held-out batches (mean over layers and positions)",
        ["batch", "sampled rest", "exact rest", "exact KL", "exact rest / exact KL"],
        loss_against_exact(model, lens, corpus.held_out),
    )


if __name__ == "__main__":
    main()

"""Head scan on random:gpt2-small, 10 sequences of [BOS] + 50 + 50 tokens: the scan against one
plain forward pass over the same tokens, and against TransformerLens's detect_head for its three
head types (one sequence at a time with a full activation cache each, as its API requires). The
copying score depends on the weights alone (W_U W_E costs d_model^2 x d_vocab FLOPs), so it is timed
on its own too. Goals: scan <= 1.2x a plain forward pass, >= 5x faster than detect_head, peak memory
within 10% of a plain forward pass."""

import torch
from transformer_lens.head_detector import detect_head

from benchmarks.common import interleaved_best_times, print_table
from mechlab.analysis.heads import copying_scores, pattern_pass, scan_heads
from mechlab.memory import peak_memory_increase
from mechlab.models.loading import load_model


def printable_repeats(
    model, seq_len: int = 50, batch: int = 10, seed: int = 0
) -> tuple[list[str], torch.Tensor]:
    """r + r strings of printable ASCII: the byte-level tokenizer of the random presets makes each
    character one token, so TransformerLens's detect_head (which takes text) sees exactly
    [BOS] + r + r, the same tokens the scan gets."""
    generator = torch.Generator().manual_seed(seed)
    texts = [
        "".join(chr(c) for c in torch.randint(33, 127, (seq_len,), generator=generator).tolist())
        * 2
        for _ in range(batch)
    ]
    tokens = model.to_tokens(texts)
    assert tokens.shape == (batch, 2 * seq_len + 1) and torch.equal(
        tokens[:, 1 : seq_len + 1], tokens[:, seq_len + 1 :]
    )
    return texts, tokens


def detect_head_route(model, texts: list[str]) -> None:
    """transformer_lens.head_detector.detect_head, as its API requires: one prompt at a time (list
    mode), each with a full activation cache, for each of its three head types."""
    for head_type in ["previous_token_head", "duplicate_token_head", "induction_head"]:
        detect_head(model, texts, head_type)


SETUP = """
import torch
from mechlab.analysis.heads import scan_heads, repeated_tokens
from mechlab.models.loading import load_model
model = load_model("random:gpt2-small")
tokens = repeated_tokens(model, seq_len=50, batch=10)
with torch.inference_mode():
    model(tokens[:1, :4])
"""


def peak_memory(mode: str) -> int:
    """Peak resident memory added by one run, in a fresh process (mechlab.memory)."""
    run = "model(tokens)" if mode == "forward" else "scan_heads(model, tokens)"
    return peak_memory_increase(SETUP, f"with torch.inference_mode():\n    {run}")


def main() -> None:
    model = load_model("random:gpt2-small")
    texts, tokens = printable_repeats(model)
    with torch.inference_mode():
        times = interleaved_best_times(
            {
                "plain forward pass": lambda: model(tokens),
                "mechlab scan_heads": lambda: scan_heads(model, tokens),
                "  of which the token pass": lambda: pattern_pass(model, tokens, 50),
                "  of which copying (weights only)": lambda: copying_scores(model),
                "TransformerLens detect_head (3 head types)": lambda: detect_head_route(
                    model, texts
                ),
            },
            repeat=3,
        )
    forward = times["plain forward pass"]
    rows = [[name, t, t / forward] for name, t in times.items()]
    print_table(
        "head scan, random:gpt2-small, 10 x 101 tokens (goal: scan <= 1.2x forward, >= 5x faster "
        "than detect_head)",
        ["route", "seconds", "ratio to forward"],
        rows,
    )
    print(
        "detect_head / scan: "
        f"{times['TransformerLens detect_head (3 head types)'] / times['mechlab scan_heads']:.1f}x"
    )
    memory = {mode: peak_memory(mode) for mode in ["forward", "scan"]}
    print_table(
        "peak memory above the loaded model (goal: scan within 10% of forward)",
        ["run", "MB", "ratio to forward"],
        [[mode, memory[mode] / 1e6, memory[mode] / memory["forward"]] for mode in memory],
    )


if __name__ == "__main__":
    main()

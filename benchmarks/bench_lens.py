"""Logit lens on random:gpt2-small with a 256-token prompt, against its floor: one plain forward
pass plus n_layers unembedding matmuls of the same size ([256, d_model] x [d_model, d_vocab]).
Goals: at most 1.3x the floor; peak memory at most a forward pass plus one chunk (the naive lens
holds 13 x 256 x 50257 floats, 670 MB)."""

import torch

from benchmarks.common import interleaved_best_times, print_table
from mechlab.analysis.lens import CHUNK_ELEMENTS, decoded_logits, logit_lens
from mechlab.memory import peak_memory_increase
from mechlab.models.loading import load_model

POS = 256


def floor(model, tokens, residual) -> None:
    model(tokens)
    for _ in range(model.cfg.n_layers):
        residual @ model.W_U


SETUP = f"""
import torch
from mechlab.analysis.lens import CHUNK_ELEMENTS, decoded_logits, logit_lens
from mechlab.models.loading import load_model
model = load_model("random:gpt2-small")
tokens = torch.randint(0, 50257, (1, {POS}), generator=torch.Generator().manual_seed(0))
with torch.inference_mode():
    model(tokens[:, :4])
"""
RUNS = {
    "forward": "model(tokens)",
    "lens": "logit_lens(model, tokens)",
    "naive": "decoded_logits(model, tokens).log_softmax(-1)",
}


def peak_memory(mode: str) -> int:
    """Peak resident memory added by one run, in a fresh process (mechlab.memory)."""
    return peak_memory_increase(SETUP, f"with torch.inference_mode():\n    {RUNS[mode]}")


def main() -> None:
    model = load_model("random:gpt2-small")
    tokens = torch.randint(0, 50257, (1, POS), generator=torch.Generator().manual_seed(0))
    residual = torch.randn(POS, model.cfg.d_model)
    with torch.inference_mode():
        times = interleaved_best_times(
            {
                "floor: forward + 12 unembed matmuls": lambda: floor(model, tokens, residual),
                "mechlab logit_lens (chunked)": lambda: logit_lens(model, tokens),
                "naive: all logits, then log_softmax": lambda: decoded_logits(
                    model, tokens
                ).log_softmax(-1),
            },
            repeat=3,
        )
    base = times["floor: forward + 12 unembed matmuls"]
    print_table(
        f"logit lens, random:gpt2-small, {POS} tokens (goal: <= 1.3x floor)",
        ["route", "seconds", "ratio to floor"],
        [[name, t, t / base] for name, t in times.items()],
    )
    memory = {mode: peak_memory(mode) for mode in ["forward", "lens", "naive"]}
    chunk_mb = CHUNK_ELEMENTS * 4 / 1e6
    print_table(
        f"peak memory above the loaded model (goal: lens <= forward + one chunk of {chunk_mb:.0f} "
        "MB)",
        ["run", "MB", "minus forward"],
        [[m, v / 1e6, (v - memory["forward"]) / 1e6] for m, v in memory.items()],
    )


if __name__ == "__main__":
    main()

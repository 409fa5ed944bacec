"""Forward pass of the from-scratch Transformer vs HookedTransformer vs Hugging Face GPT-2 on the
GPT-2 small shape, batch 4 x 256 tokens, CPU, float32. Goal: scratch no slower than Hugging Face.
The floor is the pass's matmul FLOPs divided by this machine's measured matmul rate."""

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from benchmarks.common import interleaved_best_times, print_table
from mechlab.models.loading import load_model
from mechlab.scratch.model import Transformer

BATCH, POS = 4, 256


def matmul_rate() -> float:
    """FLOP/s of a GPT-2-MLP-sized matmul: the best this machine does on the work that dominates."""
    a, b = torch.randn(BATCH * POS, 768), torch.randn(768, 3072)
    seconds = interleaved_best_times({"mm": lambda: a @ b}, repeat=20)["mm"]
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / seconds


def forward_flops(cfg) -> float:
    tokens = BATCH * POS
    per_layer = 2 * tokens * (4 * cfg.d_model * cfg.d_model + 2 * cfg.d_model * cfg.d_mlp)
    attention = 2 * 2 * BATCH * cfg.n_heads * POS * POS * cfg.d_head  # q.k and pattern.v
    return cfg.n_layers * (per_layer + attention) + 2 * tokens * cfg.d_model * cfg.d_vocab


def main() -> None:
    torch.manual_seed(0)
    hooked = load_model("random:gpt2-small")
    scratch = Transformer.from_hooked(hooked).eval()
    hf = GPT2LMHeadModel(GPT2Config()).eval()  # same shape; the weights do not matter for time
    tokens = torch.randint(0, 50257, (BATCH, POS))
    with torch.inference_mode():
        times = interleaved_best_times(
            {
                "Hugging Face GPT2LMHeadModel": lambda: hf(tokens),
                "HookedTransformer": lambda: hooked(tokens),
                "mechlab scratch Transformer": lambda: scratch(tokens),
            },
            repeat=5,
        )
        floor = forward_flops(scratch.cfg) / matmul_rate()
    hf_time = times["Hugging Face GPT2LMHeadModel"]
    rows = [[name, t, t / hf_time, t / floor] for name, t in times.items()]
    rows.append(["floor (FLOPs / matmul rate)", floor, floor / hf_time, 1.0])
    print_table(
        f"forward pass, GPT-2 small shape, batch {BATCH} x {POS}, {torch.get_num_threads()} "
        "threads",
        ["model", "seconds", "ratio to HF", "ratio to floor"],
        rows,
    )


if __name__ == "__main__":
    main()

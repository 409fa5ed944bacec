"""Peak memory against sequence length on SmolLM2-135M, each run in a fresh process (peak resident
memory added after the model is loaded): the head scan (batch 4 of [BOS] + r + r), the logit lens
over one prompt, and one attention view of every head. The aim: linear growth in the sequence
length (the attention's n_heads x pos^2 lives one layer, one chunk at a time), not pos^2 x
layers."""

from benchmarks.common import print_table
from mechlab.memory import peak_memory_increase

SETUP = (
    "from mechlab.models.loading import load_model; model = load_model('smollm2-135m'); "
    "import torch"
)
RUNS = {
    "head scan, batch 4, len(r) = L": (
        [125, 250, 500, 1000],
        "from mechlab.analysis.heads import scan_heads; scan_heads(model, seq_len={n}, batch=4)",
        lambda n: 2 * n + 1,
    ),
    "logit lens, one prompt of L tokens": (
        [250, 500, 1000, 2000],
        "from mechlab.analysis.lens import logit_lens; "
        "logit_lens(model, torch.randint(100, 40000, (1, {n})))",
        lambda n: n,
    ),
    "attention view of all 270 heads, L tokens": (
        [250, 500, 1000, 2000],
        "from mechlab.workflows.attention import attention_heads_view; "
        "attention_heads_view(model, torch.randint(100, 40000, (1, {n})), "
        "[(layer, head) for layer in range(30) for head in range(9)])",
        lambda n: n,
    ),
}


def main() -> None:
    rows = []
    for task, (sizes, code, tokens) in RUNS.items():
        first = None
        for n in sizes:
            peak = peak_memory_increase(SETUP, code.format(n=n)) / 2**20
            first = first or (peak, tokens(n))
            rows.append([task, n, tokens(n), peak, peak / first[0], tokens(n) / first[1]])
    print_table(
        "peak memory added (MiB) against sequence length, SmolLM2-135M, float32",
        ["task", "L", "tokens", "peak MiB", "x first", "tokens x first"],
        rows,
    )


if __name__ == "__main__":
    main()

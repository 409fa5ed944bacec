"""float32 against bfloat16 (and float16) for SmolLM2-135M: the forward pass (batch 4 x 256), the
head scan (10 x [BOS] + r + r, len(r) = 50) and the logit lens (one 53-token prompt), side by side,
on whatever device `--device auto` picks (the CPU here; CUDA where there is one). Reported as they
are, including where half precision is slower."""

import torch

from benchmarks.common import interleaved_best_times, print_table
from mechlab.analysis.heads import scan_heads
from mechlab.analysis.lens import logit_lens
from mechlab.models.loading import load_model

PROMPT = (
    "When Mary and John went to the store, John gave a drink to Mary. Mechanistic "
    "interpretability looks inside neural networks to find the algorithms they learned, one "
    "circuit at a time, and checks them by ablation and patching."
)


def main() -> None:
    dtypes = ["float32", "bfloat16", "float16"]
    models = {dtype: load_model("smollm2-135m", dtype=dtype) for dtype in dtypes}
    device = models["float32"].cfg.device
    tokens = torch.randint(0, 49152, (4, 256), generator=torch.Generator().manual_seed(0))
    tokens = tokens.to(device)
    rows = []
    for task, run in [
        ("forward 4 x 256", lambda m: m(tokens)),
        ("head scan 10 x 101", lambda m: scan_heads(m, seq_len=50, batch=10)),
        ("logit lens, 1 prompt", lambda m: logit_lens(m, PROMPT)),
    ]:
        with torch.inference_mode():
            times = interleaved_best_times(
                {dtype: (lambda m=models[dtype], run=run: run(m)) for dtype in dtypes}, repeat=3
            )
        rows.append(
            [task, *[times[d] for d in dtypes], *[times[d] / times["float32"] for d in dtypes[1:]]]
        )
    print_table(
        f"SmolLM2-135M on {device}, {torch.get_num_threads()} threads (seconds, best of 3)",
        ["task", *dtypes, "bfloat16 / float32", "float16 / float32"],
        rows,
    )


if __name__ == "__main__":
    main()

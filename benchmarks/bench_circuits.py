"""Circuits from the weights, side by side with TransformerLens: all of `mechlab.circuits`
(composition of three kinds, baseline, copying, OV top-1 on 128 sampled tokens) and its
composition scores alone, against `HookedTransformer.all_composition_scores` called for Q, K and V;
best of 3 interleaved, and peak memory above the loaded model in fresh processes.

TransformerLens broadcasts every earlier head against every later head before multiplying, so its
operands take about 2 x (n_layers x n_heads)^2 x d_head x d_model x 4 bytes: ~21 GB for SmolLM2,
more than this machine can spare, so there it is not run (the table says so); it is run on a
random GPT-2-small-shaped model (same scores: the gap is printed) and on Gemma 3 (whose scores
differ by design: TransformerLens does not fold Gemma's query/key and post-attention norm weights).

Goals: all of SmolLM2's circuits in <= 10 s on this CPU; the three kinds of composition >= 2x
faster than TransformerLens's three calls."""

import torch

from benchmarks.common import interleaved_best_times, print_table
from mechlab.analysis.circuits import circuits, composition_scores
from mechlab.analysis.weights import head_weights
from mechlab.memory import available_bytes, gib, peak_memory_increase
from mechlab.models.loading import load_model

MODELS = ["smollm2-135m", "random:gpt2-small", "gemma3-270m"]
OURS, COMPOSITION, THEIRS = (
    "mechlab.circuits (all)",
    "mechlab: composition, 3 kinds",
    "TransformerLens: all_composition_scores x 3",
)
SETUP = "from mechlab.models.loading import load_model\nmodel = load_model({spec!r})"
RUNS = {
    OURS: "from mechlab.analysis.circuits import circuits\ncircuits(model)",
    COMPOSITION: (
        "from mechlab.analysis.circuits import composition_scores\n"
        "from mechlab.analysis.weights import head_weights\n"
        "weights = head_weights(model)\n"
        "for kind in 'qkv':\n    composition_scores(weights, kind)"
    ),
    THEIRS: (
        "import torch\nwith torch.no_grad():\n"
        "    for kind in 'QKV':\n        model.all_composition_scores(kind)"
    ),
}


def transformer_lens_bytes(model) -> int:
    """What TransformerLens's broadcast operands take (both sides, float32)."""
    cfg = model.cfg
    return 2 * (cfg.n_layers * cfg.n_heads) ** 2 * cfg.d_head * cfg.d_model * 4


def main(repeat: int = 3) -> None:
    rows = []
    for spec in MODELS:
        model = load_model(spec)

        def ours_composition(model=model):
            weights = head_weights(model)
            return {kind: composition_scores(weights, kind) for kind in "qkv"}

        def theirs(model=model):
            with torch.no_grad():
                return {kind: model.all_composition_scores(kind.upper()) for kind in "qkv"}

        contenders = {OURS: lambda model=model: circuits(model), COMPOSITION: ours_composition}
        needed = transformer_lens_bytes(model)
        fits = needed < available_bytes() // 2
        if fits:
            contenders[THEIRS] = theirs
            mine, reference = ours_composition(), theirs()
            gap = max((mine[kind] - reference[kind]).abs().max().item() for kind in "qkv")
        times = interleaved_best_times(contenders, repeat=repeat)
        for name, seconds in times.items():
            peak = peak_memory_increase(SETUP.format(spec=spec), RUNS[name])
            ratio = times[THEIRS] / seconds if fits else ""
            rows.append([spec, name, seconds, ratio, gib(peak)])
        if fits:
            rows.append([spec, f"largest difference from TransformerLens: {gap:.1e}", "", "", ""])
        else:
            rows.append([spec, f"{THEIRS}: not run, needs ~{gib(needed)}", "", "", ""])
        del model
    print_table(
        f"Circuits from the weights, best of {repeat} (CPU, {torch.get_num_threads()} threads)",
        ["model", "what", "seconds", "TL / this", "peak memory"],
        rows,
    )


if __name__ == "__main__":
    main()

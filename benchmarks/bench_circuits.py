"""Circuits from the weights on SmolLM2 and Gemma 3, side by side with TransformerLens: all of
`mechlab.circuits` (composition of three kinds, baseline, copying, OV top-1 on 256 sampled tokens)
and its composition scores alone, against `HookedTransformer.all_composition_scores` called for Q,
K and V; best of 3 interleaved, and peak memory above the loaded model in fresh processes.

Goals: all of SmolLM2's circuits in <= 10 s on this CPU; the three kinds of composition >= 2x
faster than TransformerLens's three calls (same scores, checked here to 1e-5)."""

import torch

from benchmarks.common import interleaved_best_times, print_table
from mechlab.analysis.circuits import circuits, composition_scores, head_weights
from mechlab.memory import gib, peak_memory_increase
from mechlab.models.loading import load_model

MODELS = ["smollm2-135m", "gemma3-270m"]

SETUP = "from mechlab.models.loading import load_model\nmodel = load_model({spec!r})"
RUNS = {
    "mechlab.circuits": "from mechlab.analysis.circuits import circuits\ncircuits(model)",
    "mechlab: composition, 3 kinds": (
        "from mechlab.analysis.circuits import composition_scores, head_weights\n"
        "weights = head_weights(model)\n"
        "for kind in 'qkv':\n    composition_scores(weights, kind)"
    ),
    "TransformerLens: all_composition_scores x 3": (
        "import torch\nwith torch.no_grad():\n"
        "    for kind in 'QKV':\n        model.all_composition_scores(kind)"
    ),
}


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

        mine, reference = ours_composition(), theirs()
        gap = max((mine[kind] - reference[kind]).abs().max().item() for kind in "qkv")
        times = interleaved_best_times(
            {
                "mechlab.circuits": lambda model=model: circuits(model),
                "mechlab: composition, 3 kinds": ours_composition,
                "TransformerLens: all_composition_scores x 3": theirs,
            },
            repeat=repeat,
        )
        base = times["TransformerLens: all_composition_scores x 3"]
        for name, seconds in times.items():
            peak = peak_memory_increase(SETUP.format(spec=spec), RUNS[name])
            rows.append([spec, name, seconds, base / seconds, gib(peak)])
        rows.append([spec, f"largest difference from TransformerLens: {gap:.1e}", "", "", ""])
        del model
    print_table(
        f"Circuits from the weights, best of {repeat} (CPU, {torch.get_num_threads()} threads)",
        ["model", "what", "seconds", "TL / this", "peak memory"],
        rows,
    )


if __name__ == "__main__":
    main()

"""Patching on SmolLM2, one indirect-object prompt pair (15 tokens): exact per-head patching (270
query heads) against one plain forward pass, against TransformerLens's own
`patching.get_act_patch_attn_head_out_all_pos` (a full forward per head), and against attribution
patching (one clean forward, one corrupted forward and one backward pass), with how well attribution
agrees with exact patching. Goals: an exactly patched head costs <= 0.6x one plain forward on
average; attribution patching >= 50x faster than exact per-head patching."""

import contextlib
import io
import time

import torch
from transformer_lens import patching as tl_patching

from benchmarks.common import interleaved_best_times, print_table
from mechlab.analysis.patching import agreement, patch
from mechlab.models.loading import load_model

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When John and Mary went to the store, Mary gave a drink to"


def main(repeat: int = 3) -> None:
    model = load_model("smollm2-135m")
    clean, corrupted = model.to_tokens(CLEAN), model.to_tokens(CORRUPTED)
    mary, john = model.to_single_token(" Mary"), model.to_single_token(" John")
    n_heads = model.cfg.n_layers * model.cfg.n_heads
    with torch.inference_mode():
        _, clean_cache = model.run_with_cache(clean)
        base = model(corrupted)[0, -1]
        base = (base[mary] - base[john]).item()

    def metric(logits):
        return logits[0, -1, mary] - logits[0, -1, john] - base

    def exact():
        return patch(model, CLEAN, CORRUPTED, answer=" Mary", wrong=" John", over="heads")

    def attribution():
        return patch(model, CLEAN, CORRUPTED, answer=" Mary", wrong=" John", method="attribution")

    def transformer_lens():
        # its progress bar (270 lines in a log) goes to a buffer
        with torch.inference_mode(), contextlib.redirect_stderr(io.StringIO()):
            return tl_patching.get_act_patch_attn_head_out_all_pos(
                model, corrupted, clean_cache, metric
            )

    def forward():
        with torch.inference_mode():
            model(corrupted)

    times = interleaved_best_times(
        {"forward": forward, "exact": exact, "attribution": attribution}, repeat=repeat
    )
    # TransformerLens's route takes a full forward per head (about 100 s): run once, timed
    start = time.perf_counter()
    tl_grid = transformer_lens().float()
    tl_times = {"tl": time.perf_counter() - start}
    tl_times.update(interleaved_best_times({"forward": forward}, repeat=repeat))
    exact_result, estimate = exact(), attribution()
    span = exact_result.clean_logit_diff - exact_result.corrupted_logit_diff
    tl_grid = tl_grid / span
    same = torch.allclose(exact_result.grid, tl_grid, atol=1e-4)
    scores = agreement(exact_result, estimate)
    print_table(
        f"patching {n_heads} heads of smollm2-135m on a {clean.shape[1]}-token IOI pair "
        f"(best of {repeat})",
        ["route", "seconds", "per head / forward", "x exact"],
        [
            ["one plain forward", times["forward"], "", times["forward"] / times["exact"]],
            [
                "mechlab exact",
                times["exact"],
                times["exact"] / n_heads / times["forward"],
                1.0,
            ],
            [
                "TransformerLens get_act_patch_attn_head_out_all_pos",
                tl_times["tl"],
                tl_times["tl"] / n_heads / tl_times["forward"],
                tl_times["tl"] / times["exact"],
            ],
            [
                "mechlab attribution",
                times["attribution"],
                times["attribution"] / n_heads / times["forward"],
                times["attribution"] / times["exact"],
            ],
        ],
    )
    print(
        f"exact vs TransformerLens grid equal to 1e-4: {same}; attribution vs exact: Pearson "
        f"{scores['pearson']:.3f}, top-10 overlap {scores['top10_overlap']:.1f}; attribution is "
        f"{times['exact'] / times['attribution']:.1f}x faster than mechlab's exact patching and "
        f"{tl_times['tl'] / times['attribution']:.0f}x faster than TransformerLens's"
    )


if __name__ == "__main__":
    main()

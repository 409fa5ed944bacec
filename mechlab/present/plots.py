"""Moved: each name of this module now lives with its capability (docs/architecture.md, "Present
by capability"); the old path still works and warns."""

from mechlab.moved import moved_names

__getattr__ = moved_names(
    __name__,
    {
        "Figure": "mechlab.present.figure",
        "SCORE_TITLES": "mechlab.present.heads",
        "_diverging": "mechlab.present.figure",
        "_lens_axes": "mechlab.present.lens",
        "new_figure": "mechlab.present.figure",
        "plain": "mechlab.present.figure",
        "plot_ablation": "mechlab.present.heads",
        "plot_attribution": "mechlab.present.attribution",
        "plot_composition": "mechlab.present.circuits",
        "plot_copying": "mechlab.present.circuits",
        "plot_dla_heads": "mechlab.present.dla",
        "plot_dla_layers": "mechlab.present.dla",
        "plot_formation": "mechlab.present.training",
        "plot_grokking": "mechlab.present.grokking",
        "plot_head_scores": "mechlab.present.heads",
        "plot_histogram": "mechlab.present.features",
        "plot_induction_circuit": "mechlab.present.circuits",
        "plot_induction_mosaic": "mechlab.present.heads",
        "plot_layer_heads": "mechlab.present.figure",
        "plot_lens_curves": "mechlab.present.lens",
        "plot_lens_kl": "mechlab.present.lens",
        "plot_lens_rank": "mechlab.present.lens",
        "plot_lens_top1": "mechlab.present.lens",
        "plot_loss_by_position": "mechlab.present.heads",
        "plot_patch_grid": "mechlab.present.patching",
        "plot_patterns": "mechlab.present.attention",
        "plot_positional_qk": "mechlab.present.circuits",
        "plot_randomization": "mechlab.present.attribution",
        "plot_tuned_vs_logit": "mechlab.present.lens",
        "short": "mechlab.present.figure",
    },
)

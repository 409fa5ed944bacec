"""Moved: each name of this module now lives with its capability (docs/architecture.md, "Present
by capability"); the old path still works and warns."""

from mechlab.moved import moved_names

__getattr__ = moved_names(
    __name__,
    {
        "ablation_table": "mechlab.present.heads",
        "circuits_table": "mechlab.present.circuits",
        "dla_table": "mechlab.present.dla",
        "heads_table": "mechlab.present.heads",
        "lens_table": "mechlab.present.lens",
        "models_table": "mechlab.present.models",
        "parity_table": "mechlab.present.parity",
        "patch_table": "mechlab.present.patching",
        "prediction_table": "mechlab.present.models",
        "sae_table": "mechlab.present.features",
        "verdict_lines": "mechlab.present.parity",
    },
)

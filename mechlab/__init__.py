"""mechlab: look inside GPT-style transformers.

Built on TransformerLens's HookedTransformer (pinned to transformer-lens>=3.9,<4: 4.0 removed it).

The public names below resolve lazily (PEP 562): ``import mechlab`` costs milliseconds, and torch,
TransformerLens, matplotlib or circuitsvis are imported only when a name that needs them is used.
"""

import importlib
import sys
import warnings

from mechlab.defaults import DEFAULT_MODEL
from mechlab.errors import InputError, MechlabError, ModelSpecError, ModelUnavailableError
from mechlab.moved import install as _install_moved_modules


def _quiet_progress_widgets_warning() -> None:
    """In IPython, TransformerLens and transformers import `tqdm.auto`, which warns "IProgress not
    found" in red when ipywidgets is missing, although no progress bar is shown. Import it first
    with exactly that warning silenced (tqdm then falls back to text bars, as the warning says);
    outside IPython nothing is done."""
    if "IPython" not in sys.modules or "tqdm.autonotebook" in sys.modules:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        import tqdm.autonotebook  # noqa: F401


_quiet_progress_widgets_warning()
_install_moved_modules()  # old module paths (mechlab.model, mechlab.plots, ...): mechlab.moved

# public name -> the module that defines it
_LAZY = {
    "AblationResult": "mechlab.analysis.ablation",
    "ablate_heads": "mechlab.analysis.ablation",
    "ablation_study": "mechlab.analysis.ablation",
    "AttributionResult": "mechlab.analysis.dla",
    "Faithfulness": "mechlab.analysis.attribution",
    "RandomizationCheck": "mechlab.analysis.attribution",
    "TokenAttribution": "mechlab.analysis.attribution",
    "attribute": "mechlab.analysis.attribution",
    "Circuits": "mechlab.analysis.circuits",
    "circuits": "mechlab.analysis.circuits",
    "InductionCircuit": "mechlab.analysis.circuits",
    "induction_circuit": "mechlab.analysis.circuits",
    "faithfulness": "mechlab.analysis.attribution",
    "randomization_check": "mechlab.analysis.attribution",
    "logit_attribution": "mechlab.analysis.dla",
    "check_component": "mechlab.scratch.check",
    "PatchResult": "mechlab.analysis.patching",
    "patch": "mechlab.analysis.patching",
    "HeadScan": "mechlab.analysis.heads",
    "repeated_tokens": "mechlab.analysis.heads",
    "scan_heads": "mechlab.analysis.heads",
    "LensResult": "mechlab.analysis.lens",
    "logit_lens": "mechlab.analysis.lens",
    "load_model": "mechlab.models.loading",
    "Transformer": "mechlab.scratch.model",
    "to_hooked": "mechlab.scratch.convert",
    "train_induction": "mechlab.scratch.training",
    "TunedLens": "mechlab.analysis.tuned_lens",
    "train_tuned_lens": "mechlab.analysis.tuned_lens",
    "load_corpus": "mechlab.corpus",
    "NeuronRecords": "mechlab.analysis.neurons",
    "top_activations": "mechlab.analysis.neurons",
    "SAE": "mechlab.analysis.sae",
    "train_sae": "mechlab.analysis.sae",
    "GrokkingRun": "mechlab.scratch.grokking",
    "train_grokking": "mechlab.scratch.grokking",
    "plot_attention": "mechlab.workflows.attention",
    "View": "mechlab.present.page",
    "attention_view": "mechlab.workflows.attention",
    "save_html": "mechlab.present.page",
}
_LAZY_MODULES = {"parity": "mechlab.scratch.parity"}

__all__ = [
    "DEFAULT_MODEL",
    "SAE",
    "AblationResult",
    "AttributionResult",
    "Circuits",
    "Faithfulness",
    "GrokkingRun",
    "HeadScan",
    "InductionCircuit",
    "InputError",
    "LensResult",
    "MechlabError",
    "ModelSpecError",
    "ModelUnavailableError",
    "NeuronRecords",
    "PatchResult",
    "RandomizationCheck",
    "TokenAttribution",
    "Transformer",
    "TunedLens",
    "View",
    "ablate_heads",
    "ablation_study",
    "attention_view",
    "attribute",
    "check_component",
    "circuits",
    "faithfulness",
    "induction_circuit",
    "load_corpus",
    "load_model",
    "logit_attribution",
    "logit_lens",
    "parity",
    "patch",
    "plot_attention",
    "randomization_check",
    "repeated_tokens",
    "save_html",
    "scan_heads",
    "to_hooked",
    "top_activations",
    "train_grokking",
    "train_induction",
    "train_sae",
    "train_tuned_lens",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(_LAZY_MODULES[name])
    else:
        raise AttributeError(f"module 'mechlab' has no attribute {name!r}")
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

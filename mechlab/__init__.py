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

# public name -> the module that defines it
_LAZY = {
    "AblationResult": "mechlab.ablation",
    "ablate_heads": "mechlab.ablation",
    "ablation_study": "mechlab.ablation",
    "AttributionResult": "mechlab.dla",
    "logit_attribution": "mechlab.dla",
    "check_component": "mechlab.check",
    "PatchResult": "mechlab.patching",
    "patch": "mechlab.patching",
    "HeadScan": "mechlab.heads",
    "repeated_tokens": "mechlab.heads",
    "scan_heads": "mechlab.heads",
    "LensResult": "mechlab.lens",
    "logit_lens": "mechlab.lens",
    "load_model": "mechlab.loading",
    "Transformer": "mechlab.model",
    "to_hooked": "mechlab.model",
    "train_induction": "mechlab.training",
    "TunedLens": "mechlab.tuned_lens",
    "train_tuned_lens": "mechlab.tuned_lens",
    "load_corpus": "mechlab.corpus",
    "plot_attention": "mechlab.plots",
    "View": "mechlab.views",
    "attention_view": "mechlab.views",
    "save_html": "mechlab.views",
}
_LAZY_MODULES = {"parity"}

__all__ = [
    "DEFAULT_MODEL",
    "AblationResult",
    "AttributionResult",
    "PatchResult",
    "ablate_heads",
    "ablation_study",
    "check_component",
    "logit_attribution",
    "patch",
    "HeadScan",
    "LensResult",
    "Transformer",
    "View",
    "attention_view",
    "logit_lens",
    "parity",
    "plot_attention",
    "repeated_tokens",
    "save_html",
    "scan_heads",
    "to_hooked",
    "train_induction",
    "TunedLens",
    "train_tuned_lens",
    "load_corpus",
    "InputError",
    "MechlabError",
    "ModelSpecError",
    "ModelUnavailableError",
    "load_model",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(f"mechlab.{name}")
    else:
        raise AttributeError(f"module 'mechlab' has no attribute {name!r}")
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

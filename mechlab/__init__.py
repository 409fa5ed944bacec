"""mechlab: look inside GPT-style transformers.

Built on TransformerLens's HookedTransformer (pinned to transformer-lens>=3.9,<4: 4.0 removed it).
"""

from mechlab import parity
from mechlab.errors import InputError, MechlabError, ModelSpecError, ModelUnavailableError
from mechlab.heads import HeadScan, repeated_tokens, scan_heads
from mechlab.lens import LensResult, logit_lens
from mechlab.loading import DEFAULT_MODEL, load_model
from mechlab.model import Transformer
from mechlab.plots import plot_attention
from mechlab.views import View, attention_view, save_html

__all__ = [
    "DEFAULT_MODEL",
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
    "InputError",
    "MechlabError",
    "ModelSpecError",
    "ModelUnavailableError",
    "load_model",
]

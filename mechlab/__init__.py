"""mechlab: look inside GPT-style transformers.

Built on TransformerLens's HookedTransformer (pinned to transformer-lens>=3.9,<4: 4.0 removed it).
"""

from mechlab.errors import InputError, MechlabError, ModelSpecError, ModelUnavailableError
from mechlab.loading import DEFAULT_MODEL, load_model

__all__ = [
    "DEFAULT_MODEL",
    "InputError",
    "MechlabError",
    "ModelSpecError",
    "ModelUnavailableError",
    "load_model",
]

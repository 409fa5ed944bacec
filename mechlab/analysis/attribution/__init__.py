"""Token attribution: which tokens of the prompt drive the model's answer (GradCAM's question, asked
of a transformer), and the checks that say whether an attribution means anything.

The target is always the answer's **logit** at the last position, or the logit difference
``logit(answer) - logit(wrong)``: never a probability, which saturates (a token the model is sure of
has a gradient near zero however much the input matters). Only the answer's (and wrong's) rows of
the unembedding are computed: the model runs to its last block, then the final norm and those rows.

Attributions are to the *token* embeddings (``hook_embed``): positional embeddings, where a model
has them, are part of the forward pass but are never attributed or replaced. When the prompt starts
with the model's BOS token, every baseline keeps it (a model without its attention sink is off its
distribution), so its score is reported but it is left out of every ranking and check.

Methods (``METHODS``):

- ``saliency``: the gradient of the target with respect to each token's embedding, its L2 norm over
  d_model (unsigned).
- ``gradient_x_input``: gradient . embedding, summed over d_model (signed).
- ``integrated_gradients`` (Sundararajan et al. 2017): the gradient averaged along the straight
  path from the baseline to the input, times (input - baseline), summed over d_model. The path
  integral is adaptive composite Gauss-Legendre quadrature (see adaptive_integrated_gradients):
  `steps` nodes first (half on even panels, then each panel halved), then the panels whose
  integral disagrees with the target's change across them, or with their halves', are halved
  until the sum is complete, within a budget of `max_steps` nodes (``quadrature=
  "gauss_legendre"``: one rule of `steps` nodes, Captum's default). The nodes are batched through
  the model in chunks sized from the memory available. Completeness -- the scores add up to
  ``target - baseline_target`` -- is checked: `delta` is the gap, and a gap of 1% or more warns.
- ``layer_gradient_x_activation``: gradient . activation of the residual stream entering block
  `layer`, summed over d_model, per position: the GradCAM analogue (default: the middle block).
- ``attention_rollout`` (Abnar & Zuidema 2020): each layer's attention averaged over heads, the
  residual connection added as they define it (``0.5 A + 0.5 I``), multiplied through the layers;
  the last query's row.
- ``attention_x_gradient`` (Chefer et al. 2021): each layer's attention times its gradient,
  positive part, averaged over heads, rolled out as ``R <- R + A R`` from ``R = I``; the last
  query's row, without the identity it started from (the query is not credited for being itself).
- ``occlusion``: each token replaced by the baseline, one batched forward; its score is how far the
  target falls. The reference the other methods are compared with.

Baselines: ``"zero"`` (a zero embedding), ``"pad"``, ``"bos"`` or any one-token string (that token's
embedding at every position). BOS, when the prompt starts with it, is kept in each.
"""

# The package's modules, in reading order: target (the function attributed), integration
# (integrated gradients' path integral), methods (every method, `attribute`), checks (randomization
# and faithfulness). Their public names are importable from here, as before the split.

from mechlab.analysis.attribution.checks import (
    FRACTIONS,
    RANDOMIZATION_THRESHOLD,
    Faithfulness,
    RandomizationCheck,
    bootstrap_interval,
    erased,
    faithfulness,
    randomization_check,
    reinitialise,
    spearman,
)
from mechlab.analysis.attribution.integration import (
    COMPLETENESS_TOLERANCE,
    PANEL_NODES,
    EmbeddingPath,
    Panel,
    adaptive_integrated_gradients,
    gauss_legendre,
    integrate_panels,
    integrated_gradients,
    refine,
)
from mechlab.analysis.attribution.methods import (
    BASELINE_METHODS,
    MAX_BUDGET,
    MAX_STEPS,
    METHODS,
    QUADRATURES,
    TokenAttribution,
    attribute,
    attribution_prompts,
    check_layer,
    check_method,
    check_steps,
    occlusion,
    prepare,
    rollout,
    run_method,
)
from mechlab.analysis.attribution.target import (
    MEMORY_SHARE,
    Target,
    baseline_token,
    chunk_size,
    gradients,
    sequence_bytes,
    starts_with_bos,
)

__all__ = [
    "BASELINE_METHODS",
    "COMPLETENESS_TOLERANCE",
    "FRACTIONS",
    "MAX_BUDGET",
    "MAX_STEPS",
    "MEMORY_SHARE",
    "METHODS",
    "PANEL_NODES",
    "QUADRATURES",
    "RANDOMIZATION_THRESHOLD",
    "EmbeddingPath",
    "Faithfulness",
    "Panel",
    "RandomizationCheck",
    "Target",
    "TokenAttribution",
    "adaptive_integrated_gradients",
    "attribute",
    "attribution_prompts",
    "baseline_token",
    "bootstrap_interval",
    "check_layer",
    "check_method",
    "check_steps",
    "chunk_size",
    "erased",
    "faithfulness",
    "gauss_legendre",
    "gradients",
    "integrate_panels",
    "integrated_gradients",
    "occlusion",
    "prepare",
    "randomization_check",
    "refine",
    "reinitialise",
    "rollout",
    "run_method",
    "sequence_bytes",
    "spearman",
    "starts_with_bos",
]

"""A sparse autoencoder on one site of the residual stream (Bricken et al. 2023, Cunningham et al.
2023), trained offline with SAELens as the engine and judged with mechlab's own metrics.

Single neurons are polysemantic (Elhage et al. 2022): a model represents more features than it
has dimensions, in superposition. An SAE rewrites a layer's activation x as a sparse, non-negative
combination of many more directions: f = TopK(W_enc (x - b_dec) + b_enc), x_hat = W_dec f + b_dec,
with only k latents active per token (Gao et al. 2024's TopK, SAELens's `TopKTrainingSAE`).

The layer's activations are cached once (the forward pass stops at that layer; on a CPU through a
bfloat16 copy of a float32 model, 2.1x the tokens per second, as benchmarks/bench_features.py
measures: the SAE is still evaluated on the model as given), then the SAE is
trained from memory for several epochs, the inputs scaled so that their mean norm is sqrt(d_model)
(folded back into the weights at the end). SAELens's trainer does each step (its TopK auxiliary
loss revives dead latents); mechlab drives the loop, so that Ctrl-C keeps a checkpoint (one
safetensors file, nothing pickled: SAELens's own trainer state is a torch pickle) that the same run
continues from.

Massive activations (Sun et al. 2024) are left out as BOS is: at SmolLM2's layer 15 about 1 token
in 3,500 (the first token of some sequences, an attention sink) has a residual norm ~75x the median
and carries over half of the layer's variance; in training each such token is a loss spike of 10^3
and the variance explained would measure those few tokens. Tokens whose norm exceeds
`OUTLIER_RATIO` x the training activations' median are not SAE inputs: not trained on, not encoded
for the dashboards, passed through unchanged when the reconstruction is spliced in (the zero and
mean ablations leave them too), and counted. The metrics also give the variance explained with
the SAE applied to them as well (`variance_explained_all`), so nothing is hidden.

The metrics are computed here, on held-out text, not taken from SAELens's logs: the fraction of
variance explained, L0, the fraction of latents never active, and the model's next-token loss with
the reconstruction spliced in at that site, against the clean loss and against replacing the
activation by zero and by its mean (loss recovered relative to both: zero-ablation flatters a
residual-stream SAE, since zeroing the residual stream destroys everything).
"""

# The package's modules: model (sites, cached activations, metrics, the SAE), training (train_sae,
# its checkpoints), records (what each latent responds to: the dashboards' data).

from mechlab.analysis.sae.model import (
    BATCH,
    EVAL_TOKENS,
    FORMAT,
    SAE,
    SITES,
    SAEMetrics,
    SplicedLosses,
    cache_activations,
    caching_model,
    check_arguments,
    check_features,
    hook_name,
    read_manifest,
    sae_training_bytes,
    spliced_losses,
    variance_explained,
)
from mechlab.analysis.sae.records import (
    DASHBOARD_SAMPLES,
    FINAL_NORM_TOKENS,
    FeatureDashboards,
    feature_dashboards,
    feature_records,
    final_norm_scale,
)
from mechlab.analysis.sae.training import (
    CHECKPOINT_FILE,
    DEFAULT_EPOCHS,
    LEARNING_RATE,
    LOSS_TOKENS,
    OUTLIER_MARGIN,
    OUTLIER_RATIO,
    SEQ_LEN,
    TrainingState,
    evaluate,
    inference_tensors,
    remove_checkpoint,
    resume,
    sae_lens_version,
    save_checkpoint,
    train_sae,
)

__all__ = [
    "BATCH",
    "CHECKPOINT_FILE",
    "DASHBOARD_SAMPLES",
    "DEFAULT_EPOCHS",
    "EVAL_TOKENS",
    "FINAL_NORM_TOKENS",
    "FORMAT",
    "LEARNING_RATE",
    "LOSS_TOKENS",
    "OUTLIER_MARGIN",
    "OUTLIER_RATIO",
    "SAE",
    "SEQ_LEN",
    "SITES",
    "FeatureDashboards",
    "SAEMetrics",
    "SplicedLosses",
    "TrainingState",
    "cache_activations",
    "caching_model",
    "check_arguments",
    "check_features",
    "evaluate",
    "feature_dashboards",
    "feature_records",
    "final_norm_scale",
    "hook_name",
    "inference_tensors",
    "read_manifest",
    "remove_checkpoint",
    "resume",
    "sae_lens_version",
    "sae_training_bytes",
    "save_checkpoint",
    "spliced_losses",
    "train_sae",
    "variance_explained",
]

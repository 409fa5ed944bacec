"""What each latent of an SAE responds to: the data of its feature dashboards (top activations
with context, a sample of its activations, its density, its direct effect on the logits), and the
choice of latents to show (`mechlab sae show`)."""

from dataclasses import dataclass

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.analysis.neurons import NeuronRecords
from mechlab.analysis.sae.model import SAE, SITES

DASHBOARD_SAMPLES = 48  # activations above zero drawn per latent, for the quantile bands


# Tokens the final norm's mean scale is taken over: a mean, steady to a percent by a few hundred.
FINAL_NORM_TOKENS = 512


def final_norm_scale(model: HookedTransformer, sequences: list[Tensor]) -> float:
    """The final norm's mean scale (what it divides the residual stream by) over these token
    sequences, BOS left out; 1 for a model without one. The blocks run, then the final norm alone
    (the unembedding, a fifth of SmolLM2's forward pass, is not needed)."""
    if "ln_final.hook_scale" not in model.hook_dict:
        return 1.0
    scales = []

    def keep(scale: Tensor, hook) -> None:
        scales.append(scale[0, 1:].float().flatten().cpu())

    with torch.inference_mode(), model.hooks(fwd_hooks=[("ln_final.hook_scale", keep)]):
        for tokens in sequences:
            residual = model(tokens[None].to(model.cfg.device), stop_at_layer=model.cfg.n_layers)
            model.ln_final(residual)
    return torch.cat(scales).mean().item()


def feature_records(
    model: HookedTransformer,
    sae: SAE,
    texts: list[str],
    *,
    tokens: int | None = None,
    k: int = 20,
    samples: int = DASHBOARD_SAMPLES,
    progress: bool = False,
):
    """Each latent's top activations over `texts` (with context), a uniform sample of its
    activations above zero, its density and histogram (mechlab.analysis.neurons, the SAE's
    encoder as the transform), and its direct effect on the logits: W_dec[f] @ W_U divided by the
    final norm's mean scale on these texts (the decoder row as if it reached the unembedding
    alone, through a typical final norm)."""
    from mechlab.analysis.neurons import LOGIT_EFFECTS, sequences, top_activations

    records = top_activations(
        model,
        texts,
        layers=[sae.layer],
        k=k,
        tokens=tokens,
        hook=SITES[sae.site],
        transform=sae.features,
        samples=samples,
        progress=progress,
    )
    scale = final_norm_scale(
        model, [d for d in sequences(model, texts, FINAL_NORM_TOKENS) if len(d) > 1]
    )
    with torch.inference_mode():
        effects = (sae.sae.W_dec.float() / scale) @ model.W_U.float().cpu()  # [latent, d_vocab]
        top, bottom = (
            effects.topk(LOGIT_EFFECTS, -1),
            effects.topk(LOGIT_EFFECTS, -1, largest=False),
        )
    records.promoted, records.promoted_values = top.indices[None], top.values[None]
    records.suppressed, records.suppressed_values = bottom.indices[None], bottom.values[None]
    records.hook = f"{sae.hook} -> SAE latents"
    records.corpus = {"final_norm_scale": scale}
    return records


@dataclass
class FeatureDashboards:
    """The records of every latent of an SAE's layer, ranked by density (`ranking`), the latents
    active at least once (`alive`), and those that get a page (`chosen`)."""

    records: NeuronRecords
    layer: int
    ranking: list[int]
    alive: list[int]
    chosen: list[int]


def feature_dashboards(
    model: HookedTransformer,
    sae: SAE,
    texts: list[str],
    *,
    features: list[int] | None = None,
    top: int = 50,
    progress: bool = False,
    **options,
) -> FeatureDashboards:
    """feature_records over `texts`, and the latents that get a page: the `features` asked for, or
    else the `top` densest; `options` go to feature_records."""
    records = feature_records(model, sae, texts, progress=progress, **options)
    density = records.frac_positive[0]
    ranking = density.argsort(descending=True).tolist()
    alive = [f for f in ranking if density[f] > 0]
    chosen = list(dict.fromkeys(features)) if features else alive[:top]
    return FeatureDashboards(records, sae.layer, ranking, alive, chosen)

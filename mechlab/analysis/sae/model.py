"""An SAE and what it is measured by: the sites it reads, the activations cached for it, its
metrics on held-out text, and the SAE itself (load, encode, decode). See mechlab.analysis.sae."""

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.analysis.tokens import check_layer
from mechlab.checks import other_weights
from mechlab.errors import DataError, InputError
from mechlab.memory import check_fits

SITES = {
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
}
BATCH = 4096  # activations per training step
EVAL_TOKENS = 32768  # held-out activations for variance explained, L0 and dead latents
FORMAT = 1


def hook_name(layer: int, site: str) -> str:
    return f"blocks.{layer}.{SITES[site]}"


def check_arguments(model: HookedTransformer, layer, site, expansion, k) -> None:
    cfg = model.cfg
    check_layer(model, layer)
    if site not in SITES:
        raise InputError(f"unknown site {site!r}: choose one of {', '.join(SITES)}")
    if hook_name(layer, site) not in model.hook_dict:
        raise InputError(f"{cfg.model_name} has no {site} at layer {layer}")
    if isinstance(expansion, bool) or not isinstance(expansion, int) or expansion < 1:
        raise InputError(f"expansion must be a positive integer, got {expansion!r}")
    width = expansion * cfg.d_model
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < width:
        raise InputError(
            f"k must be an integer from 1 to the width - 1 ({width - 1} = {expansion} x "
            f"{cfg.d_model} - 1), got {k!r}"
        )
    check_fits(
        sae_training_bytes(cfg.d_model, width),
        what=f"an SAE of {width:,} latents ({expansion} x {cfg.d_model})",
        fix="choose a smaller --expansion (8 to 32 is usual).",
    )


def sae_training_bytes(d_model: int, width: int) -> int:
    """About the memory an SAE's training holds, in float32: the encoder and decoder with their
    gradients and Adam's two moments (8 d_model x width), a batch's pre-activations, latents and
    their gradients (4 BATCH x width), and the held-out latents the metrics are taken on."""
    return 4 * width * (8 * d_model + 4 * BATCH + EVAL_TOKENS)


# --------------------------------------------------------------------------------------------------
# Activations


def caching_model(model: HookedTransformer) -> HookedTransformer:
    """The model to cache training activations with: a bfloat16 copy of a float32 model on the
    CPU (faster there, see the module docstring), else the model itself."""
    if model.cfg.device != "cpu" or model.cfg.dtype != torch.float32:
        return model
    import copy

    return copy.deepcopy(model).to(torch.bfloat16, print_details=False)


def cache_activations(
    model: HookedTransformer,
    sequences: Int[Tensor, "batch pos"],
    layer: int,
    site: str,
    *,
    progress: bool = False,
    batch: int = 8,
) -> Float[Tensor, "token d_model"]:
    """The activation at (layer, site) of every position but BOS, float32 on the CPU; the forward
    pass stops after that layer."""
    from mechlab.progress import progress_bar

    name, kept = hook_name(layer, site), []

    def keep(activation: Tensor, hook) -> None:
        kept.append(activation[:, 1:].reshape(-1, activation.shape[-1]).float().cpu())

    with torch.inference_mode():
        for chunk in progress_bar(
            sequences.split(batch), desc=f"caching {site} of layer {layer}", disable=not progress
        ):
            model.run_with_hooks(
                chunk.to(model.cfg.device), fwd_hooks=[(name, keep)], stop_at_layer=layer + 1
            )
    return torch.cat(kept)


# --------------------------------------------------------------------------------------------------
# The metrics


def variance_explained(
    x: Float[Tensor, "token d_model"], reconstruction: Float[Tensor, "token d_model"]
) -> float:
    """1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2 over the tokens: 1 for a perfect
    reconstruction, 0 for the mean."""
    x, reconstruction = x.double(), reconstruction.double()
    residual = (x - reconstruction).pow(2).sum()
    total = (x - x.mean(0)).pow(2).sum()
    return float(1 - residual / total)


@dataclass
class SplicedLosses:
    """Next-token loss of the model on the same tokens: clean, with the activation replaced by a
    reconstruction, by zero and by its mean; and the KL from the clean output."""

    clean: float
    spliced: float
    zero: float
    mean: float
    kl: float

    @property
    def delta(self) -> float:
        return self.spliced - self.clean

    def recovered(self, ablated: float) -> float:
        """How much of the loss the ablation costs the reconstruction gets back (1: all)."""
        return (ablated - self.spliced) / (ablated - self.clean)


def spliced_losses(
    model: HookedTransformer,
    sequences: Int[Tensor, "batch pos"],
    name: str,
    reconstruct: Callable[[Tensor], Tensor],
    mean: Float[Tensor, " d_model"],
    batch: int = 8,
    limit: float = math.inf,
) -> SplicedLosses:
    """Loss (and KL from the clean run) with the activation at hook `name` replaced, at every
    position but BOS and those whose norm is above `limit` (massive activations), by
    reconstruct(activation), by zero and by `mean`; predictions from positions 1 .. pos-2 (the BOS
    position's own prediction cannot change)."""
    totals = dict(clean=0.0, spliced=0.0, zero=0.0, mean=0.0, kl=0.0)
    count = 0

    def replace(fn):
        def hook(activation: Tensor, hook) -> Tensor:
            out, rest = activation.clone(), activation[:, 1:]
            massive = rest.float().norm(dim=-1, keepdim=True) > limit
            out[:, 1:] = torch.where(massive, rest, fn(rest).to(activation.dtype))
            return out

        return hook

    replacements = {
        "spliced": reconstruct,
        "zero": lambda a: torch.zeros_like(a),
        "mean": lambda a: mean.to(a.device, a.dtype).expand_as(a),
    }
    with torch.inference_mode():
        for chunk in sequences.split(batch):
            chunk = chunk.to(model.cfg.device)
            targets = chunk[:, 2:].flatten()
            clean_logits = model(chunk)[:, 1:-1].float()
            clean_log_probs = clean_logits.log_softmax(-1).flatten(0, 1)
            totals["clean"] += F.nll_loss(clean_log_probs, targets, reduction="sum").item()
            for kind, fn in replacements.items():
                logits = model.run_with_hooks(chunk, fwd_hooks=[(name, replace(fn))])
                log_probs = logits[:, 1:-1].float().log_softmax(-1).flatten(0, 1)
                totals[kind] += F.nll_loss(log_probs, targets, reduction="sum").item()
                if kind == "spliced":
                    totals["kl"] += F.kl_div(
                        log_probs, clean_log_probs, log_target=True, reduction="sum"
                    ).item()
            count += len(targets)
    return SplicedLosses(**{key: value / count for key, value in totals.items()})


@dataclass
class SAEMetrics:
    """mechlab's own measures of an SAE on held-out tokens."""

    tokens: int  # held-out activations the first three are measured on (massive ones left out)
    variance_explained: float
    l0: float  # mean active latents per token
    dead_fraction: float  # latents never active on the held-out tokens
    loss_tokens: int  # tokens the losses are measured on
    clean_loss: float
    spliced_loss: float
    zero_ablation_loss: float
    mean_ablation_loss: float
    kl: float  # KL(clean || spliced), nats per token
    massive_tokens: int  # held-out tokens above the norm limit: passed through, not measured
    variance_explained_all: float  # with the SAE applied to the massive tokens as well

    @property
    def delta_loss(self) -> float:
        return self.spliced_loss - self.clean_loss

    @property
    def recovered_vs_zero(self) -> float:
        return (self.zero_ablation_loss - self.spliced_loss) / (
            self.zero_ablation_loss - self.clean_loss
        )

    @property
    def recovered_vs_mean(self) -> float:
        return (self.mean_ablation_loss - self.spliced_loss) / (
            self.mean_ablation_loss - self.clean_loss
        )

    def to_json(self) -> dict:
        return {
            **asdict(self),
            "delta_loss": self.delta_loss,
            "loss_recovered_vs_zero_ablation": self.recovered_vs_zero,
            "loss_recovered_vs_mean_ablation": self.recovered_vs_mean,
        }


# --------------------------------------------------------------------------------------------------
# The SAE


def read_manifest(directory: str | Path) -> dict:
    """An SAE directory's sae.json, read before the model loads (to name the model it was trained
    on and check the features asked for); SAE.load checks the rest."""
    from mechlab.io import read_json_object

    json_path = Path(directory) / "sae.json"
    if not json_path.is_file():
        raise InputError(
            f"no SAE in {str(directory)!r} (no sae.json): train one with `mechlab sae train "
            "--out DIR`"
        )
    return read_json_object(json_path, fix="train it again with `mechlab sae train`")


def check_features(manifest: dict, features: list[int]) -> None:
    width = manifest.get("width")
    for feature in features:
        if isinstance(width, int) and feature >= width:
            raise InputError(f"feature {feature} is out of range: this SAE has {width} latents")


class SAE:
    """A trained TopK sparse autoencoder for one site of one model: SAELens's `TopKSAE` (the
    inference form, decoder rows of unit norm) with what mechlab knows about it: the model and its
    weights' hash, the site, the corpus, how it was trained, and its metrics."""

    def __init__(self, sae, manifest: dict, metrics: SAEMetrics | None = None):
        self.sae = sae  # sae_lens.TopKSAE
        self.manifest = manifest
        self.metrics = metrics

    @property
    def layer(self) -> int:
        return self.manifest["layer"]

    @property
    def site(self) -> str:
        return self.manifest["site"]

    @property
    def k(self) -> int:
        return self.sae.cfg.k

    @property
    def width(self) -> int:
        return self.sae.cfg.d_sae

    @property
    def hook(self) -> str:
        return hook_name(self.layer, self.site)

    @property
    def norm_limit(self) -> float:
        """Activations with a larger norm are massive ones, not SAE inputs (module docstring)."""
        return self.manifest["norm_limit"]

    def features(self, x: Float[Tensor, "*token d_model"]) -> Float[Tensor, "*token latent"]:
        """The latents of x, zero for massive activations (what the dashboards show)."""
        return self.encode(x) * (x.float().norm(dim=-1, keepdim=True) <= self.norm_limit)

    def encode(self, x: Float[Tensor, "*token d_model"]) -> Float[Tensor, "*token latent"]:
        with torch.inference_mode():
            return self.sae.encode(x.float())

    def decode(self, f: Float[Tensor, "*token latent"]) -> Float[Tensor, "*token d_model"]:
        with torch.inference_mode():
            return self.sae.decode(f)

    def reconstruct(self, x: Float[Tensor, "*token d_model"]) -> Float[Tensor, "*token d_model"]:
        return self.decode(self.encode(x))

    def __repr__(self) -> str:
        headline = ""
        if self.metrics:
            m = self.metrics
            headline = (
                f", variance explained {m.variance_explained:.3f}, L0 {m.l0:.1f}, dead "
                f"{m.dead_fraction:.1%}, loss recovered {m.recovered_vs_mean:.1%} vs mean "
                f"ablation"
            )
        return (
            f"SAE({self.manifest['model']} {self.site} of layer {self.layer}: {self.width} "
            f"latents, k={self.k}{headline})"
        )

    def to_json(self) -> dict:
        return {
            **self.manifest,
            "format": FORMAT,
            "architecture": "topk (SAELens TopKSAE)",
            "d_in": self.sae.cfg.d_in,
            "width": self.width,
            "k": self.k,
            "metrics": self.metrics.to_json() if self.metrics else None,
        }

    def tensors(self) -> dict[str, Tensor]:
        return {
            name: getattr(self.sae, name).detach().contiguous()
            for name in ("W_enc", "b_enc", "W_dec", "b_dec")
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], k: int, manifest: dict, metrics=None):
        from sae_lens import TopKSAE, TopKSAEConfig

        d_in, d_sae = tensors["W_enc"].shape
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, dtype="float32", device="cpu"))
        sae.load_state_dict({name: tensor.float() for name, tensor in tensors.items()})
        return cls(sae.eval(), manifest, metrics)

    @classmethod
    def load(cls, directory: str | Path, model: HookedTransformer) -> "SAE":
        """The SAE saved in `directory` (sae.safetensors and sae.json), refused when unreadable,
        malformed, or trained for another model."""
        from mechlab.analysis.weights import weights_sha256
        from mechlab.cache import sha256
        from mechlab.io import Fields, read_json_object, read_safetensors

        directory = Path(directory)
        json_path, weights = directory / "sae.json", directory / "sae.safetensors"
        if not json_path.is_file() or not weights.is_file():
            raise DataError(
                f"no SAE in {str(directory)!r} (it needs sae.safetensors and sae.json): train one "
                "with `mechlab sae train --out DIR`"
            )
        fix = f"train it again with `mechlab sae train --out {directory}`"
        manifest = read_json_object(json_path, fix=fix)
        fields = Fields(manifest, json_path, fix)
        if fields.integer("format") != FORMAT:
            raise DataError(f"{json_path} is not in a format this mechlab reads; {fix}")
        if fields.text("weights_sha256") != weights_sha256(model):
            raise DataError(
                f"the SAE in {str(directory)!r} was trained for "
                + other_weights(manifest.get("model"), model.cfg.model_name, "for")
                + ": train one for this model"
            )
        layer, site = fields.integer("layer", 0), fields.text("site")
        if not fields.number("norm_limit") > 0:
            raise DataError(f"{json_path}: norm_limit must be positive; {fix}")
        d_in, width, k = (
            fields.integer("d_in", 1),
            fields.integer("width", 1),
            fields.integer("k", 1),
        )
        if site not in SITES or layer >= model.cfg.n_layers or d_in != model.cfg.d_model:
            raise DataError(f"{json_path} describes a site {model.cfg.model_name} lacks; {fix}")
        if k >= width:
            raise DataError(f"{json_path}: k = {k} is not below the width {width}; {fix}")
        shapes = {
            "W_enc": (d_in, width),
            "b_enc": (width,),
            "W_dec": (width, d_in),
            "b_dec": (d_in,),
        }
        recorded = manifest.get("sae_sha256")  # absent in SAEs saved before it was written
        if recorded is not None and recorded != sha256(weights):
            raise DataError(
                f"{weights} is not the file `mechlab sae train` wrote (its SHA-256 differs from "
                f"the one in {json_path.name}: converted or edited since); {fix}"
            )
        tensors, _ = read_safetensors(weights, fix=fix, shapes=shapes, float_dtype="float32")
        metrics = manifest.get("metrics")
        known = {f.name for f in SAEMetrics.__dataclass_fields__.values()}
        metrics = (
            SAEMetrics(**{key: metrics[key] for key in known})
            if isinstance(metrics, dict) and known <= set(metrics)
            else None
        )
        kept = {
            key: value for key, value in manifest.items() if key not in ("metrics", "sae_sha256")
        }
        return cls.from_tensors(tensors, k, kept, metrics)

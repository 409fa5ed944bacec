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

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.analysis.tokens import check_model
from mechlab.checks import check_seed, other_weights
from mechlab.errors import DataError, InputError
from mechlab.memory import check_fits
from mechlab.models.loading import model_spec
from mechlab.moved import moved_names

SITES = {
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
}
SEQ_LEN = 128  # tokens per cached sequence, BOS first (never an SAE input)
BATCH = 4096  # activations per training step
LEARNING_RATE = 4e-4  # Gao et al.'s 2e-4 / sqrt(d_sae / 2^14) for d_sae of a few thousand
DEFAULT_EPOCHS = 3
EVAL_TOKENS = 32768  # held-out activations for variance explained, L0 and dead latents
LOSS_TOKENS = 8192  # held-out tokens for the spliced losses (four forward passes each)
OUTLIER_RATIO = 10.0  # a token whose norm is above this x the median is a massive activation
OUTLIER_MARGIN = 0.05  # tokens cached beyond those asked for, to make up for massive ones left out
FORMAT = 1
CHECKPOINT_FILE = "checkpoint.safetensors"


def hook_name(layer: int, site: str) -> str:
    return f"blocks.{layer}.{SITES[site]}"


def check_arguments(model: HookedTransformer, layer, site, expansion, k) -> None:
    cfg = model.cfg
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < cfg.n_layers:
        raise InputError(
            f"layer {layer!r} is out of range: {cfg.model_name} has layers 0 .. {cfg.n_layers - 1}"
        )
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
        from mechlab.analysis.tuned_lens import weights_sha256
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


# --------------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainingState:
    """Where a training run is (steps done, losses), saved with the SAE's and Adam's tensors."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def evaluate(
    model: HookedTransformer,
    sae: SAE,
    held_out: Int[Tensor, "batch pos"],
    mean: Float[Tensor, " d_model"],
    eval_tokens: int = EVAL_TOKENS,
    loss_tokens: int = LOSS_TOKENS,
) -> SAEMetrics:
    """mechlab's metrics of `sae` on the held-out sequences (see the module docstring); `mean` is
    the training activations' mean, what mean-ablation puts in."""
    held_out = held_out[: math.ceil(eval_tokens / (held_out.shape[1] - 1))]
    everything = cache_activations(model, held_out, sae.layer, sae.site)
    latents = torch.cat([sae.encode(chunk) for chunk in everything.split(BATCH)])
    reconstruction = torch.cat([sae.decode(chunk) for chunk in latents.split(BATCH)])
    kept = everything.norm(dim=-1) <= sae.norm_limit
    x, latents = everything[kept], latents[kept]
    active = latents > 0
    n_loss = max(1, math.ceil(loss_tokens / (held_out.shape[1] - 2)))
    losses = spliced_losses(
        model, held_out[:n_loss], sae.hook, sae.reconstruct, mean, limit=sae.norm_limit
    )
    return SAEMetrics(
        tokens=len(x),
        variance_explained=variance_explained(x, reconstruction[kept]),
        l0=active.sum(-1).float().mean().item(),
        dead_fraction=(~active.any(0)).float().mean().item(),
        loss_tokens=n_loss * (held_out.shape[1] - 2),
        clean_loss=losses.clean,
        spliced_loss=losses.spliced,
        zero_ablation_loss=losses.zero,
        mean_ablation_loss=losses.mean,
        kl=losses.kl,
        massive_tokens=int((~kept).sum()),
        variance_explained_all=variance_explained(everything, reconstruction),
    )


def train_sae(
    model: HookedTransformer,
    texts: list[str],
    *,
    layer: int,
    site: str = "resid_post",
    expansion: int = 8,
    k: int = 32,
    tokens: int | None = None,
    seed: int = 0,
    held_out: list[str] | None = None,
    epochs: int = DEFAULT_EPOCHS,
    eval_tokens: int = EVAL_TOKENS,
    loss_tokens: int = LOSS_TOKENS,
    batch: int = BATCH,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    corpus: dict | None = None,
) -> SAE:
    """Train a TopK SAE with expansion x d_model latents, k active, on the (layer, site)
    activations of the first `tokens` tokens of `texts` (default: all), for `epochs` passes over
    them; then measure it on `held_out` texts (default: the last tenth of the sequences). See the
    module docstring. Ctrl-C stops after the current step: the SAE comes back with what it learnt
    and ``manifest["interrupted"]`` set, and with `checkpoint` (a directory) the run is saved
    there and the same call continues from it."""
    check_model(model)
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from mechlab.analysis.tuned_lens import token_sequences, weights_sha256
    from mechlab.progress import progress_bar

    check_arguments(model, layer, site, expansion, k)
    check_seed(seed)
    for name, value in [
        ("epochs", epochs),
        ("eval_tokens", eval_tokens),
        ("loss_tokens", loss_tokens),
        ("batch", batch),
    ]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    seq_len = min(SEQ_LEN, model.cfg.n_ctx)  # a model with a shorter context: shorter sequences
    sequences = token_sequences(model, texts, seq_len)
    if held_out is None:
        cut = max(1, len(sequences) // 10)
        sequences, evaluation = sequences[:-cut], sequences[-cut:]
    else:
        evaluation = token_sequences(model, held_out, seq_len)
    available = len(sequences) * (seq_len - 1)
    tokens = available if tokens is None else tokens
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < batch:
        raise InputError(
            f"tokens must be an integer >= {batch} (one training step), got {tokens!r}"
        )
    if tokens > available:
        raise InputError(
            f"{tokens:,} training tokens is more than the texts hold: {available:,}; ask for "
            f"{available:,} or fewer"
        )
    # A little more than asked for is cached (massive activations are left out below), so that
    # `tokens` remain to train on where the texts hold them.
    sequences = sequences[: math.ceil(tokens * (1 + OUTLIER_MARGIN) / (seq_len - 1))]
    started = time.perf_counter()
    cacher = caching_model(model)
    activations = cache_activations(cacher, sequences, layer, site, progress=progress)
    cached_in = str(cacher.cfg.dtype).removeprefix("torch.")
    del cacher
    cached_seconds = time.perf_counter() - started
    norms = activations.norm(dim=-1)
    limit = OUTLIER_RATIO * norms.median().item()
    kept = (norms <= limit).nonzero()[:, 0][:tokens]  # the first `tokens` that are not massive
    massive = int((norms[: int(kept[-1]) + 1] > limit).sum()) if len(kept) else len(norms)
    activations = activations[kept]
    if len(activations) < batch:
        raise InputError(
            f"{len(activations):,} training tokens are left once massive activations are left "
            f"out, fewer than one step of {batch:,}: give more text"
        )
    mean = activations.mean(0)
    scale = math.sqrt(model.cfg.d_model) / activations.norm(dim=-1).mean().item()

    width = expansion * model.cfg.d_model
    with torch.random.fork_rng():  # SAELens draws its initial weights from torch's global
        torch.manual_seed(seed)  # generator: seeded here, the caller's left as it was
        training = TopKTrainingSAE(
            TopKTrainingSAEConfig(d_in=model.cfg.d_model, d_sae=width, k=k, device="cpu")
        )
    with torch.no_grad():  # the decoder bias starts at the data's mean (Bricken et al. 2023)
        training.b_dec.copy_(mean * scale)
    steps = epochs * (len(activations) // batch)
    trainer = SAETrainer(
        SAETrainerConfig(
            total_training_samples=steps * batch,
            train_batch_size_samples=batch,
            lr=LEARNING_RATE,
            lr_decay_steps=steps // 5,  # the last fifth decays to zero
            lr_end=0.0,
            dead_feature_window=max(10, 100_000 // batch),  # 100k tokens without firing: dead
            feature_sampling_window=10**9,
        ),
        training,
        data_provider=iter(()),
    )
    trainer.activation_scaler.scaling_factor = scale
    plan = {
        "weights_sha256": weights_sha256(model),
        "layer": layer,
        "site": site,
        "width": width,
        "k": k,
        "tokens": tokens,
        "epochs": epochs,
        "seed": seed,
        "batch": batch,
    }
    state = resume(checkpoint, plan, trainer, batch) if checkpoint else TrainingState()
    generator = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(len(activations), generator=generator) for _ in range(epochs)]
    per_epoch = len(activations) // batch
    interrupted, clock = False, time.perf_counter() - state.seconds
    bar = progress_bar(
        total=steps, initial=state.step, desc="training the SAE", disable=not progress
    )
    try:
        while state.step < steps:
            epoch, index = divmod(state.step, per_epoch)
            inputs = activations[orders[epoch][index * batch : (index + 1) * batch]]
            output = trainer.step(inputs)
            trainer.n_training_steps += 1
            state.step += 1
            state.losses.append(output.loss.item())
            state.seconds = time.perf_counter() - clock
            bar.update(1)
            bar.set_postfix(loss=f"{state.losses[-1]:.3g}", refresh=False)
    except KeyboardInterrupt:
        interrupted = True
        if checkpoint and state.step:
            save_checkpoint(checkpoint, plan, trainer, state)
    finally:
        bar.close()
    tensors = inference_tensors(training, scale)
    manifest = {
        "model": model.cfg.model_name,
        "spec": model_spec(model),
        "weights_sha256": plan["weights_sha256"],
        "layer": layer,
        "site": site,
        "hook": hook_name(layer, site),
        "expansion": expansion,
        "corpus": corpus or {"name": "texts"},
        "tokens": tokens,
        "epochs": epochs,
        "steps": state.step,
        "planned_steps": steps,
        "batch": batch,
        "learning_rate": LEARNING_RATE,
        "seed": seed,
        "input_scale": scale,
        "cached_in": cached_in,
        "norm_limit": limit,
        "massive_tokens_left_out": massive,
        "caching_seconds": cached_seconds,
        "training_seconds": state.seconds,
        "loss": state.losses,
        "interrupted": interrupted,
        "engine": "sae-lens " + sae_lens_version(),
    }
    sae = SAE.from_tensors(tensors, k, manifest)
    started = time.perf_counter()
    sae.metrics = evaluate(model, sae, evaluation, mean, eval_tokens, loss_tokens)
    sae.manifest["evaluation_seconds"] = time.perf_counter() - started
    return sae


def inference_tensors(training, scale: float) -> dict[str, Tensor]:
    """The inference SAE of a training one that saw its inputs multiplied by `scale`: SAELens
    folds the decoder norms (rows of unit norm), and the scale is folded in here, so that the
    result takes and returns activations as the model has them."""
    inference = {name: value.detach().clone() for name, value in training.state_dict().items()}
    training.process_state_dict_for_saving_inference(inference)
    return {
        "W_enc": inference["W_enc"] * scale,
        "b_enc": inference["b_enc"],
        "W_dec": inference["W_dec"] / scale,
        "b_dec": inference["b_dec"] / scale,
    }


def sae_lens_version() -> str:
    from importlib.metadata import version

    return version("sae-lens")


# --------------------------------------------------------------------------------------------------
# Checkpoints: one safetensors file, the record in its metadata


def save_checkpoint(directory, plan: dict, trainer, state: TrainingState) -> None:
    from safetensors.torch import save_file

    from mechlab.io import atomic_path, json_text

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"sae.{name}": value for name, value in trainer.sae.state_dict().items()}
    names = [name for name, _ in trainer.sae.named_parameters()]
    adam = trainer.optimizer.state_dict()["state"]
    for index, name in enumerate(names):
        for moment in ("exp_avg", "exp_avg_sq"):
            tensors[f"{moment}.{name}"] = adam[index][moment]
    tensors["n_forward_passes_since_fired"] = trainer.n_forward_passes_since_fired
    record = {"plan": plan, **asdict(state)}
    with atomic_path(directory / CHECKPOINT_FILE) as tmp:
        save_file(
            {key: value.detach().contiguous() for key, value in tensors.items()},
            str(tmp),
            metadata={"format": str(FORMAT), "record": json_text(record)},
        )


def remove_checkpoint(directory) -> None:
    (Path(directory) / CHECKPOINT_FILE).unlink(missing_ok=True)


def resume(directory, plan: dict, trainer, batch: int) -> TrainingState:
    """The state saved in `directory` loaded into the trainer, or a fresh start. A checkpoint of
    another run, or one that cannot be read, is a DataError saying how to start over."""
    from mechlab.io import Fields, read_safetensors

    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        return TrainingState()
    fix = f"remove {path} to start over, or use another --out"
    tensors, metadata = read_safetensors(path, fix=fix)
    try:
        record = json.loads(metadata.get("record", ""))
    except ValueError:
        record = None
    if metadata.get("format") != str(FORMAT) or not isinstance(record, dict):
        raise DataError(f"{path} is not an SAE checkpoint mechlab can read; {fix}")
    fields = Fields(record, path, fix)
    if fields.object("plan") != plan:
        raise DataError(
            f"{path} belongs to another training run (model, site, size, tokens or seed): {fix}"
        )
    step, losses, seconds = (
        fields.integer("step", 1),
        fields.numbers("losses"),
        fields.number("seconds"),
    )
    names = [name for name, _ in trainer.sae.named_parameters()]
    state_dict = {name[4:]: value for name, value in tensors.items() if name.startswith("sae.")}
    try:
        trainer.sae.load_state_dict(state_dict)
        trainer.optimizer.load_state_dict(
            {
                "state": {
                    index: {
                        "step": torch.tensor(float(step)),
                        "exp_avg": tensors[f"exp_avg.{name}"],
                        "exp_avg_sq": tensors[f"exp_avg_sq.{name}"],
                    }
                    for index, name in enumerate(names)
                },
                "param_groups": trainer.optimizer.state_dict()["param_groups"],
            }
        )
        trainer.n_forward_passes_since_fired = tensors["n_forward_passes_since_fired"]
    except (KeyError, RuntimeError, ValueError) as error:
        raise DataError(f"{path} does not fit this SAE ({str(error)[:120]}); {fix}") from None
    with warnings.catch_warnings():
        # the schedule is fast-forwarded to the step the checkpoint stopped at, before this run's
        # first optimizer step: what torch warns about ("lr_scheduler.step() before
        # optimizer.step()") is the intent here
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        for _ in range(step):
            trainer.lr_scheduler.step()
    trainer.n_training_steps = step
    trainer.n_training_samples = step * batch
    return TrainingState(step, losses, seconds)


# moved to mechlab.analysis.sae_records (the old paths still work)
__getattr__ = moved_names(
    __name__,
    dict.fromkeys(
        ["DASHBOARD_SAMPLES", "FINAL_NORM_TOKENS", "feature_records", "final_norm_scale"],
        "mechlab.analysis.sae_records",
    ),
)

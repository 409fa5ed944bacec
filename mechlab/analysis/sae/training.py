"""Training an SAE offline: SAELens's trainer driven step by step from cached activations, a
checkpoint on Ctrl-C that the same run continues from, then the metrics on held-out text."""

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.analysis.sae.model import (
    BATCH,
    EVAL_TOKENS,
    FORMAT,
    SAE,
    SAEMetrics,
    cache_activations,
    caching_model,
    check_arguments,
    hook_name,
    spliced_losses,
    variance_explained,
)
from mechlab.analysis.tokens import check_model
from mechlab.checks import check_seed
from mechlab.errors import DataError, InputError
from mechlab.models.loading import model_spec

SEQ_LEN = 128  # tokens per cached sequence, BOS first (never an SAE input)
LEARNING_RATE = 4e-4  # Gao et al.'s 2e-4 / sqrt(d_sae / 2^14) for d_sae of a few thousand
DEFAULT_EPOCHS = 3
LOSS_TOKENS = 8192  # held-out tokens for the spliced losses (four forward passes each)
OUTLIER_RATIO = 10.0  # a token whose norm is above this x the median is a massive activation
OUTLIER_MARGIN = 0.05  # tokens cached beyond those asked for, to make up for massive ones left out
CHECKPOINT_FILE = "checkpoint.safetensors"


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

    from mechlab.analysis.tokens import token_sequences
    from mechlab.analysis.weights import weights_sha256
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
    sequences = token_sequences(model, texts, seq_len, progress=progress)
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

"""The tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the
Tuned Lens"): before decoding the residual stream before layer l through the final norm and
unembedding, translate it with an affine map of its own, h -> h + h A_l + b_l, trained so that the
decoded distribution matches the model's final one. A_l and b_l start at zero, so an untrained
tuned lens is exactly the logit lens; the final norm and the unembedding stay frozen.

Training is cheap on a CPU because the loss never forms the full [tokens, d_vocab] logits: for
each position it decodes only the SUPPORT tokens the model's final distribution ranks highest, plus
one bucket for every other token, whose share of the translated distribution is estimated from
REST_SAMPLE vocabulary tokens drawn at random each step (`support_kl`). Merging tokens can only
lower a KL (the chain rule: exact = restricted + p_rest * KL within the rest), so with the rest's
mass known exactly the restricted loss is a lower bound that is tight when the support holds
nearly all of the final distribution's mass; the sampled estimate of that mass adds noise. The
evaluation (`evaluate`) always uses the exact KL over the whole vocabulary.
"""

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import HookedTransformer

from mechlab.analysis.tokens import check_model, token_sequences
from mechlab.analysis.weights import weights_sha256
from mechlab.checks import check_seed
from mechlab.defaults import TUNED_LENS_CHECKPOINT_FILES, TUNED_LENS_TOKENS
from mechlab.errors import DataError, InputError

SUPPORT = 32  # final-distribution tokens decoded exactly, per position
REST_SAMPLE = 256  # vocabulary tokens sampled per step to estimate the rest bucket
SEQ_LEN = 128  # tokens per training sequence (BOS first)
BATCH = 8  # sequences per step
LEARNING_RATE = 1e-3
DEFAULT_TOKENS = TUNED_LENS_TOKENS
CHECKPOINT_EVERY = 20
FORMAT = 1
CHECKPOINT_FORMAT = 2


# --------------------------------------------------------------------------------------------------
# The lens


class TunedLens(nn.Module):
    """One affine translator per layer input (the residual stream before layer l, l = 0 ..
    n_layers - 1); the output row is decoded as it is. `manifest` says which model the lens
    belongs to and how it was trained."""

    def __init__(self, n_layers: int, d_model: int, manifest: dict | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_layers, d_model, d_model))
        self.bias = nn.Parameter(torch.zeros(n_layers, d_model))
        self.manifest = dict(manifest or {})

    @classmethod
    def for_model(cls, model: HookedTransformer) -> "TunedLens":
        """An identity lens for `model` (exactly the logit lens until it is trained)."""
        return cls(model.cfg.n_layers, model.cfg.d_model, lens_identity(model))

    @property
    def n_layers(self) -> int:
        return self.weight.shape[0]

    def forward(
        self, residuals: Float[Tensor, "layer *rest d_model"]
    ) -> Float[Tensor, "layer *rest d_model"]:
        """Translate the residual streams before layers 0 .. n_layers - 1 (stacked on the first
        dimension, in that order, with any dimensions between)."""
        shape = residuals.shape
        flat = residuals.reshape(shape[0], -1, shape[-1])
        translated = flat + torch.baddbmm(self.bias[:, None, :], flat, self.weight)
        return translated.reshape(shape)

    def translate_rows(
        self, residuals: Float[Tensor, "row pos d_model"]
    ) -> Float[Tensor, "row pos d_model"]:
        """The logit lens's rows (the n_layers layer inputs, then the output): every row but the
        output translated."""
        if residuals.shape[0] != self.n_layers + 1:
            raise InputError(
                f"the tuned lens decodes {self.n_layers} layer inputs and the output; got "
                f"{residuals.shape[0]} rows (include_mid is not supported with a tuned lens)"
            )
        return torch.cat([self(residuals[:-1]), residuals[-1:]])

    def __repr__(self) -> str:
        trained = self.manifest.get("tokens_seen", 0)
        return (
            f"TunedLens({self.manifest.get('model', '?')}: {self.n_layers} translators, "
            f"{trained:,} tokens of {self.manifest.get('corpus', {}).get('name', 'no corpus')})"
        )

    # ---------------------------------------------------------------------------------------------
    # Saving and loading: safetensors and a JSON manifest, nothing pickled

    def save(self, directory: str | Path) -> None:
        """lens.safetensors and manifest.json in `directory`, each written to a temporary name and
        renamed; the manifest (written last) records the weights' hash, so a kill between the two
        leaves a pair that `load` refuses, never a mixed one it accepts."""
        from safetensors.torch import save_file

        from mechlab.io import atomic_path, json_text

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"weight": self.weight.detach().contiguous(), "bias": self.bias.detach()}
        with atomic_path(directory / "lens.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"format": str(FORMAT)})
            digest = file_sha256(tmp)
        manifest = dict(self.manifest, format=FORMAT, lens_sha256=digest)
        with atomic_path(directory / "manifest.json") as tmp:
            tmp.write_text(json_text(manifest))

    @classmethod
    def load(cls, directory: str | Path, model: HookedTransformer) -> "TunedLens":
        """The lens saved in `directory`, refusing one trained for another model, and any file
        that is unreadable, malformed, non-finite or not the one the manifest records."""
        from mechlab.io import Fields, read_json_object, read_safetensors

        directory = Path(directory)
        weights, manifest_path = directory / "lens.safetensors", directory / "manifest.json"
        if not weights.is_file() or not manifest_path.is_file():
            raise DataError(
                f"no tuned lens in {str(directory)!r} (it needs lens.safetensors and "
                "manifest.json): train one with `mechlab tune-lens --out DIR`"
            )
        fix = f"train the lens again with `mechlab tune-lens --out {directory}`"
        manifest = read_json_object(manifest_path, fix=fix)
        fields = Fields(manifest, manifest_path, fix)
        identity = lens_identity(model)
        if fields.text("weights_sha256") != identity["weights_sha256"]:
            raise DataError(
                f"the tuned lens in {str(directory)!r} was trained for {manifest.get('model')!r} "
                f"(weights sha256 {str(manifest.get('weights_sha256'))[:12]}...), not for "
                f"{identity['model']!r} (weights sha256 {identity['weights_sha256'][:12]}...): "
                "train one for this model with `mechlab tune-lens`"
            )
        n_layers, d_model = fields.integer("n_layers", 1), fields.integer("d_model", 1)
        if (n_layers, d_model) != (identity["n_layers"], identity["d_model"]):
            raise DataError(
                f"{manifest_path} describes a lens of {n_layers} layers of {d_model}, but "
                f"{identity['model']} has {identity['n_layers']} of {identity['d_model']}; {fix}"
            )
        fields.integer("tokens_seen", 0)
        fields.object("corpus")
        if "lens_sha256" in manifest and fields.text("lens_sha256") != file_sha256(weights):
            raise DataError(f"{weights} is not the file {manifest_path} records; {fix}")
        shapes = {"weight": (n_layers, d_model, d_model), "bias": (n_layers, d_model)}
        tensors, _ = read_safetensors(weights, fix=fix, shapes=shapes)
        lens = cls(n_layers, d_model, manifest)
        with torch.no_grad():
            lens.weight.copy_(tensors["weight"])
            lens.bias.copy_(tensors["bias"])
        return lens


def lens_identity(model: HookedTransformer) -> dict:
    return {
        "model": model.cfg.model_name,
        "weights_sha256": weights_sha256(model),
        "n_layers": model.cfg.n_layers,
        "d_model": model.cfg.d_model,
    }


# --------------------------------------------------------------------------------------------------
# Data: documents to sequences


def layer_inputs_and_final(
    model: HookedTransformer, tokens: Int[Tensor, "batch pos"]
) -> tuple[Float[Tensor, "layer batch pos d_model"], Float[Tensor, "batch pos d_vocab"]]:
    """The residual stream before every layer, and the model's final log-probabilities."""
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():  # not inference_mode: the lens trains on these
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
        return torch.stack([cache[name] for name in names]), cast(Tensor, logits).log_softmax(-1)


# --------------------------------------------------------------------------------------------------
# The training loss on the final distribution's support


def support_kl(
    model: HookedTransformer,
    translated: Float[Tensor, "layer batch pos d_model"],
    final_log_probs: Float[Tensor, "batch pos d_vocab"],
    *,
    support: int = SUPPORT,
    rest_sample: Int[Tensor, " sample"] | None,
    W_U_T: Float[Tensor, "d_vocab d_model"] | None = None,
) -> Float[Tensor, ""]:
    """Mean over layers and positions of KL(final || translated), both restricted to the final
    distribution's top `support` tokens at that position plus one bucket for the rest. The rest's
    translated log-mass is exact when `rest_sample` is None (all logits are formed: for tests),
    else estimated from the logits of those sampled token ids (scaled to the vocabulary)."""
    d_vocab = final_log_probs.shape[-1]
    top_log_p, top_ids = final_log_probs.topk(support, dim=-1)  # [batch pos support]
    p_top = top_log_p.exp()
    p_rest = (1 - p_top.sum(-1)).clamp_min(1e-12)
    normalized = model.ln_final(translated)  # [layer batch pos d_model]
    W_U, b_U = model.W_U, model.b_U
    columns = (W_U.T if W_U_T is None else W_U_T)[top_ids]  # [batch pos support d_model]
    top_logits = (
        einops.einsum(
            normalized,
            columns,
            "layer batch pos d_model, batch pos support d_model -> layer batch pos support",
        )
        + b_U[top_ids]
    )
    if rest_sample is None:
        all_logits = normalized @ W_U + b_U
        rest_logits = all_logits.scatter(-1, top_ids.expand_as(top_logits), -math.inf)
        rest_lse = rest_logits.logsumexp(-1)
    else:
        sample_logits = normalized @ W_U[:, rest_sample] + b_U[rest_sample]  # [l b p sample]
        in_support = (top_ids[..., :, None] == rest_sample).any(-2)  # [batch pos sample]
        sample_logits = sample_logits.masked_fill(in_support, -math.inf)
        kept = (~in_support).sum(-1).clamp_min(1)
        scale = ((d_vocab - support) / kept).log()
        rest_lse = sample_logits.logsumexp(-1) + scale
    log_z = torch.logaddexp(top_logits.logsumexp(-1), rest_lse)
    log_q_top, log_q_rest = top_logits - log_z[..., None], rest_lse - log_z
    kl = (p_top * (top_log_p - log_q_top)).sum(-1) + p_rest * (p_rest.log() - log_q_rest)
    return kl.mean()


# --------------------------------------------------------------------------------------------------
# Training


def train_tuned_lens(
    model: HookedTransformer,
    texts: list[str],
    *,
    tokens: int = DEFAULT_TOKENS,
    seed: int = 0,
    progress: bool = False,
    corpus: dict | None = None,
    checkpoint: str | Path | None = None,
    repeat: bool = True,
    announce=None,
) -> TunedLens:
    """Train a tuned lens for `model` on `texts` for about `tokens` tokens (BATCH sequences of
    SEQ_LEN per step, in an order drawn from `seed`), with Adam and a learning rate decaying
    linearly to zero. See the module docstring for the loss.

    Ctrl-C stops after the current step: the lens comes back with what it learnt and
    ``manifest["interrupted"]`` set. With `checkpoint` (a directory), the training state is saved
    there every CHECKPOINT_EVERY steps and on Ctrl-C, and a run with the same model, corpus,
    tokens and seed continues from it. A budget beyond the texts goes over them again, or with
    `repeat` False is refused (InputError, saying how many tokens they hold). `announce`, if
    given, is called with the plan (steps, tokens, how long the first step took and so about how
    long the rest will) once everything is checked and the first step is done."""
    check_model(model)
    from mechlab.progress import progress_bar

    check_seed(seed)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < BATCH * SEQ_LEN:
        raise InputError(f"tokens must be an integer >= {BATCH * SEQ_LEN}, got {tokens!r}")
    sequences = token_sequences(model, texts, progress=progress)
    available = len(sequences) * SEQ_LEN
    if not repeat and tokens > available:
        raise InputError(
            f"{tokens:,} training tokens is more than the training texts hold: {available:,} "
            f"({len(sequences):,} sequences of {SEQ_LEN}); ask for {available:,} or fewer"
        )
    generator = torch.Generator().manual_seed(seed)
    steps = math.ceil(tokens / (BATCH * SEQ_LEN))
    order = torch.cat(
        [
            torch.randperm(len(sequences), generator=generator)
            for _ in range(math.ceil(steps * BATCH / len(sequences)))
        ]
    )
    lens = TunedLens.for_model(model)
    optimizer = torch.optim.Adam(lens.parameters(), lr=LEARNING_RATE)
    plan = {
        "weights_sha256": lens.manifest["weights_sha256"],
        "corpus": corpus or {"name": "texts"},
        "tokens": tokens,
        "seed": seed,
    }
    state = Checkpoint.resume(checkpoint, plan, lens, optimizer) if checkpoint else Checkpoint()
    for _ in range(state.step):  # the rest-bucket samples the skipped steps drew
        torch.randint(0, model.cfg.d_vocab_out, (REST_SAMPLE,), generator=generator)
    for param in model.parameters():
        param.requires_grad_(False)
    W_U_T = model.W_U.T.contiguous()  # rows gathered per position: contiguous is 5x faster
    interrupted, started = False, time.perf_counter() - state.seconds
    first_step, state_seconds = state.step, state.seconds
    bar = progress_bar(total=steps, initial=state.step, desc="tuned lens", disable=not progress)
    try:
        while state.step < steps:
            batch = sequences[order[state.step * BATCH : (state.step + 1) * BATCH]]
            residuals, final_log_probs = layer_inputs_and_final(model, batch)
            sample = torch.randint(0, model.cfg.d_vocab_out, (REST_SAMPLE,), generator=generator)
            loss = support_kl(
                model, lens(residuals), final_log_probs, rest_sample=sample, W_U_T=W_U_T
            )
            for group in optimizer.param_groups:
                group["lr"] = LEARNING_RATE * (1 - state.step / steps)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            state.step += 1
            state.losses.append(loss.item())
            state.seconds = time.perf_counter() - started
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if announce is not None and state.step == first_step + 1:
                step_seconds = time.perf_counter() - started - state_seconds
                announce(
                    f"{steps - first_step:,} steps of {BATCH} x {SEQ_LEN} tokens "
                    f"({tokens:,} of the {available:,} the texts hold), about "
                    f"{step_seconds * (steps - first_step) / 60:.1f} min from the first step"
                )
            if checkpoint and state.step % CHECKPOINT_EVERY == 0 and state.step < steps:
                state.save(checkpoint, plan, lens, optimizer)
    except KeyboardInterrupt:
        interrupted = True
        if checkpoint and state.step:
            state.save(checkpoint, plan, lens, optimizer)
    finally:
        bar.close()
    lens.manifest.update(
        corpus=plan["corpus"],
        tokens_seen=state.step * BATCH * SEQ_LEN,
        steps=state.step,
        planned_steps=steps,
        seed=seed,
        training_seconds=state.seconds,
        loss=state.losses,
        interrupted=interrupted,
        support=SUPPORT,
        rest_sample=REST_SAMPLE,
    )
    return lens


@dataclass
class Checkpoint:
    """Where a training run is: steps done, the losses so far, seconds spent. Saved as one file,
    checkpoint.safetensors: the lens and Adam's moments as tensors, the rest (and which run it
    belongs to) as JSON in its metadata, written to a temporary name and renamed, so a kill at any
    point leaves either the previous checkpoint or this one."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0

    FILES = TUNED_LENS_CHECKPOINT_FILES
    FILE = FILES[0]
    OLD_FILES = ("checkpoint.json",)  # the record's own file before format 2

    def save(self, directory, plan: dict, lens: TunedLens, optimizer) -> None:
        from safetensors.torch import save_file

        from mechlab.io import atomic_path, json_text

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"weight": lens.weight.detach(), "bias": lens.bias.detach()}
        adam = optimizer.state_dict()["state"]
        for index, name in enumerate(["weight", "bias"]):
            for moment in ("exp_avg", "exp_avg_sq"):
                tensors[f"{moment}.{name}"] = adam[index][moment]
        record = {"plan": plan, "step": self.step, "losses": self.losses, "seconds": self.seconds}
        with atomic_path(directory / self.FILE) as tmp:
            save_file(
                {k: v.contiguous() for k, v in tensors.items()},
                str(tmp),
                metadata={"format": str(CHECKPOINT_FORMAT), "record": json_text(record)},
            )

    @classmethod
    def resume(cls, directory, plan: dict, lens: TunedLens, optimizer) -> "Checkpoint":
        """The state saved in `directory` (loaded into `lens` and `optimizer`), or a fresh start
        when there is none. A checkpoint of another run, or one that cannot be read or trusted
        (truncated, malformed, non-finite, the wrong shapes), is a DataError saying how to start
        over: it is never silently reused, nor silently replaced."""
        from mechlab.io import Fields, read_safetensors

        directory = Path(directory)
        path = directory / cls.FILE
        if not path.exists():
            return cls()
        fix = f"remove {path} to start over, or use another --out"
        shape = {"weight": tuple(lens.weight.shape), "bias": tuple(lens.bias.shape)}
        shapes = {
            f"{moment}.{name}": s
            for name, s in shape.items()
            for moment in ("exp_avg", "exp_avg_sq")
        }
        tensors, metadata = read_safetensors(path, fix=fix, shapes={**shape, **shapes})
        try:
            record = json.loads(metadata.get("record", ""), parse_constant=float)
        except ValueError:
            record = None
        if metadata.get("format") != str(CHECKPOINT_FORMAT) or not isinstance(record, dict):
            raise DataError(f"{path} is not a tuned-lens checkpoint mechlab can read; {fix}")
        fields = Fields(record, path, fix)
        if fields.object("plan") != plan:
            raise DataError(
                f"{path} belongs to another training run (another model, corpus, token budget "
                f"or seed): {fix}"
            )
        step, losses = fields.integer("step", 1), fields.numbers("losses")
        seconds = fields.number("seconds")
        if len(losses) != step:
            raise DataError(f"{path}: {len(losses)} losses recorded for {step} steps; {fix}")
        with torch.no_grad():
            lens.weight.copy_(tensors["weight"])
            lens.bias.copy_(tensors["bias"])
        optimizer.load_state_dict(
            {
                "state": {
                    index: {
                        "step": torch.tensor(float(step)),
                        "exp_avg": tensors[f"exp_avg.{name}"],
                        "exp_avg_sq": tensors[f"exp_avg_sq.{name}"],
                    }
                    for index, name in enumerate(["weight", "bias"])
                },
                "param_groups": optimizer.state_dict()["param_groups"],
            }
        )
        return cls(step, losses, seconds)

    @classmethod
    def remove(cls, directory) -> None:
        for name in cls.FILES + cls.OLD_FILES:
            (Path(directory) / name).unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Evaluation, with the exact KL


@dataclass
class LensEvaluation:
    """Per layer input (and the output): on held-out text, the exact KL(final || lens) and the
    cross-entropy with the actual next token, for the logit lens and the tuned lens."""

    model: str
    layers: list[str]
    tokens: int
    logit_kl: list[float]
    tuned_kl: list[float]
    logit_cross_entropy: list[float]
    tuned_cross_entropy: list[float]

    def __repr__(self) -> str:
        logit = sum(self.logit_kl[:-1]) / (len(self.layers) - 1)
        tuned = sum(self.tuned_kl[:-1]) / (len(self.layers) - 1)
        return (
            f"LensEvaluation({self.model}: {self.tokens:,} held-out tokens, mean KL to the final "
            f"distribution over layers: logit lens {logit:.2f}, tuned lens {tuned:.2f} nats)"
        )

    @property
    def tuned_better_everywhere(self) -> bool:
        return all(t < lo for t, lo in zip(self.tuned_kl[:-1], self.logit_kl[:-1], strict=True))

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "tokens": self.tokens,
            "layers": self.layers,
            "logit": {"kl": self.logit_kl, "cross_entropy": self.logit_cross_entropy},
            "tuned": {"kl": self.tuned_kl, "cross_entropy": self.tuned_cross_entropy},
        }


def evaluation_sequences(
    model: HookedTransformer, texts: list[str], tokens: int
) -> Int[Tensor, "batch pos"]:
    """The first `tokens` tokens' worth of sequences of `texts`; asking for more than they hold is
    an InputError saying how many they do."""
    sequences = token_sequences(model, texts)
    if tokens > len(sequences) * SEQ_LEN:
        raise InputError(
            f"{tokens:,} evaluation tokens is more than the held-out texts hold: "
            f"{len(sequences) * SEQ_LEN:,} ({len(sequences):,} sequences of {SEQ_LEN}); ask for "
            "that many or fewer"
        )
    return sequences[: max(1, tokens // SEQ_LEN)]


def evaluate(
    model: HookedTransformer,
    lens: TunedLens,
    texts: list[str],
    *,
    tokens: int = 8192,
    progress: bool = False,
) -> LensEvaluation:
    """Exact per-layer KL and cross-entropy, over the whole vocabulary, on the first `tokens`
    tokens' worth of sequences of `texts` (more than they hold is an InputError). One layer's
    logits ([batch, pos, d_vocab]) at a time."""
    from mechlab.progress import progress_bar

    sequences = evaluation_sequences(model, texts, tokens)
    n_layers = model.cfg.n_layers
    kl_sums = {"logit": torch.zeros(n_layers + 1, dtype=torch.float64)}
    kl_sums["tuned"] = kl_sums["logit"].clone()
    cross_entropy_sums = {name: sums.clone() for name, sums in kl_sums.items()}
    positions = predicted = 0
    with torch.inference_mode():
        batches = sequences.split(BATCH // 2)
        for batch in progress_bar(batches, desc="evaluating", disable=not progress, leave=False):
            residuals, final_log_probs = layer_inputs_and_final(model, batch)
            next_tokens = batch[:, 1:, None]
            final_probs = final_log_probs.exp()
            for name, rows in (("logit", residuals), ("tuned", lens(residuals))):
                for layer in range(n_layers):
                    log_q = model.unembed(model.ln_final(rows[layer])).log_softmax(-1)
                    kl = (final_probs * (final_log_probs - log_q)).sum(-1).clamp_min(0)
                    kl_sums[name][layer] += kl.double().sum()
                    cross_entropy = -log_q[:, :-1].gather(-1, next_tokens)
                    cross_entropy_sums[name][layer] += cross_entropy.double().sum()
                cross_entropy = -final_log_probs[:, :-1].gather(-1, next_tokens)
                cross_entropy_sums[name][n_layers] += cross_entropy.double().sum()
            positions += batch.numel()
            predicted += next_tokens.numel()
    labels = ["embed"] + [f"after L{layer}" for layer in range(n_layers - 1)]
    return LensEvaluation(
        model=model.cfg.model_name,
        layers=[*labels, f"after L{n_layers - 1} (output)"],
        tokens=positions,
        logit_kl=(kl_sums["logit"] / positions).tolist(),
        tuned_kl=(kl_sums["tuned"] / positions).tolist(),
        logit_cross_entropy=(cross_entropy_sums["logit"] / predicted).tolist(),
        tuned_cross_entropy=(cross_entropy_sums["tuned"] / predicted).tolist(),
    )


# --------------------------------------------------------------------------------------------------
# The cached lens of `mechlab lens --tuned auto`


def cached_lens_directory(model: HookedTransformer) -> Path:
    """Where the cache keeps this model's tuned lens: by name and weights hash."""
    from mechlab.cache import cache_dir
    from mechlab.io import model_slug

    slug = model_slug(model.cfg.model_name)
    return cache_dir() / "tuned-lens" / f"{slug}-{weights_sha256(model)[:16]}"


def lens_bytes(model: HookedTransformer) -> int:
    """What a lens and its checkpoint (the lens and Adam's two moments) take on disk."""
    one = model.cfg.n_layers * (model.cfg.d_model + 1) * model.cfg.d_model * 4
    return 4 * one + (1 << 20)


def train_default_lens(
    model: HookedTransformer, directory: Path, *, progress: bool = False
) -> TunedLens:
    """Train a lens on the default corpus with the default budget and save it in `directory`
    (in the cache: the room it needs is checked first, and a cache that cannot be written is the
    cache's one-line error); Ctrl-C saves nothing."""
    from mechlab.cache import cache_writes, check_free_space
    from mechlab.corpus import load_corpus

    corpus = load_corpus()
    needed = f"{lens_bytes(model) / 2**20:.0f} MB"
    check_free_space(directory, lens_bytes(model), needed)
    with cache_writes(needed=needed):
        directory.mkdir(parents=True, exist_ok=True)
        lens = train_tuned_lens(
            model, corpus.train, progress=progress, corpus=corpus.manifest(), checkpoint=directory
        )
        if lens.manifest["interrupted"]:
            raise KeyboardInterrupt
        lens.save(directory)
        Checkpoint.remove(directory)
    return lens


def cached_lens(model: HookedTransformer) -> TunedLens | None:
    """The tuned lens cached for this model, or None when there is none (the report then says how
    to make one)."""
    directory = cached_lens_directory(model)
    if not (directory / "manifest.json").exists():
        return None
    return TunedLens.load(directory, model)


def tuned_lens_for(model: HookedTransformer, where: str, *, train: bool = False) -> TunedLens:
    """The tuned lens saved in the directory `where`, or with 'auto' the one cached for the model
    (trained and cached first when `train`): `mechlab lens --tuned` and the report's policy."""
    if where != "auto":
        return TunedLens.load(where, model)
    lens = cached_lens(model)
    if lens is not None:
        return lens
    if not train:
        raise InputError(
            f"no tuned lens cached for {model.cfg.model_name}: add --train-if-missing to "
            f"train one (minutes), or train it with `mechlab tune-lens --model "
            f"{model.cfg.model_name} --out DIR` and pass --tuned DIR"
        )
    directory = cached_lens_directory(model)
    train_default_lens(model, directory, progress=True)
    return TunedLens.load(directory, model)

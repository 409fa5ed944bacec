"""Grokking: a one-layer Transformer (mechlab.scratch.model) trained from scratch on modular
addition fits its training pairs early and generalises to the rest only much later (Power et al.
2022). Nanda et al. (2023, "Progress measures for grokking via mechanistic interpretability")
found the algorithm it ends with (key frequencies, trigonometric identities: see
mechlab.analysis.fourier) and progress measures that move long before the test accuracy does.

The task and model are theirs: the input is the three tokens ``a b =`` (a, b in 0..p-1, "=" is
token p), the answer is (a + b) mod p, read at the last position from the first p logits; one
layer, d_model 128, 4 heads of 32, d_mlp 512, ReLU, no norms, learned positions, initialised as
theirs (`nanda_init`: every matrix from normal(0, 1/d_model), the unembedding from
normal(0, 1/d_vocab)); full-batch AdamW (lr 1e-3 after 10 warm-up steps, weight decay 1, betas 0.9
and 0.98) on a fixed random fraction of the p^2 pairs, the rest held out.

The initialisation matters: with GPT-2's (std 0.02, four times smaller here) the same model
generalises almost as soon as it fits, with no memorisation phase to grok out of (Liu et al. 2022,
"Omnigrok", tie grokking to a large initial weight norm).

The default (p = 113, half the pairs, 3,000 steps) was chosen from this table, measured on this
project's 2-core CPU with benchmarks/bench_grokking.py (checkpoints every 100 steps; seconds to
grok from runs that shared the machine, so an upper bound; one step costs 64 ms at 30% of the
pairs and 100 ms at 50% on a quiet machine, computing the last position only):

    fraction  seed  memorised at  grokked at    s to grok
    0.3       0     200           > 6000        > 1150 (Nanda et al. report some 10,000 epochs)
    0.4       0     200           1500          161
    0.4       1     200           > 3000        -
    0.4       2     200           2500          255
    0.5       0     200           700           87
    0.5       1     200           900           105
    0.5       2     200           900           99

So half the pairs groks for every seed tried, 3.5 to 4.5 times later than it memorises, in under
two minutes; 0.3 would need more than the 10-minute budget.

Checkpoints (the weights, every `checkpoint` steps) are kept in memory; after training, the key
frequencies are read from the final embedding, and the restricted and excluded losses of every
checkpoint are computed with them, as Nanda et al. do.
"""

import copy
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechlab.analysis.fourier import (
    excluded_logits,
    frequency_norms,
    key_frequencies,
    restricted_logits,
)
from mechlab.checks import check_count, check_seed, is_prime, is_whole_number
from mechlab.defaults import GROKKING_FRACTION, GROKKING_P, GROKKING_STEPS
from mechlab.defaults import MAX_GROKKING_P as MAX_P
from mechlab.errors import InputError
from mechlab.memory import check_fits
from mechlab.scratch.model import Config, Transformer

LR, WEIGHT_DECAY, BETAS, WARMUP = 1e-3, 1.0, (0.9, 0.98), 10
GROKKED = 0.99  # test accuracy that counts as generalised
DEFAULT_P, DEFAULT_FRACTION, DEFAULT_STEPS = GROKKING_P, GROKKING_FRACTION, GROKKING_STEPS
CHECKPOINTS = 200  # about this many checkpoints per run unless `checkpoint` says otherwise


def grokking_bytes(p: int, d_model: int = 128, d_mlp: int = 512) -> int:
    """About the peak memory of a run: every one of the p^2 pairs goes through the model at once
    (full batch), and each keeps its logits over p answers several times over (the logits, their
    log-softmax and both gradients) beside its activations (3 positions of the residual stream,
    queries, keys, values and attention outputs, and the MLP at the last position)."""
    per_pair = 4 * (p + 1) + 3 * 8 * d_model + 3 * d_mlp
    return 4 * p * p * per_pair


def check_arguments(p: int, fraction: float, steps: int, checkpoint: int | None) -> None:
    """Every argument, before anything is built: one InputError naming the bad value and the fix,
    or a ResourceError for a modulus whose run cannot fit in memory (it grows as p^3)."""
    if not is_whole_number(p) or p < 3:
        raise InputError(
            f"p must be a prime >= 3 (the Fourier analysis needs a field), got {p!r}: e.g. 113"
        )
    check_count(p, "p", minimum=3, maximum=MAX_P)
    check_fits(
        grokking_bytes(p),
        what=f"grokking (a + b) mod {p} (every pair at once; memory grows as p^3)",
        fix="choose a smaller prime, e.g. 113 (the default).",
    )
    if not is_prime(p):
        raise InputError(
            f"p must be a prime >= 3 (the Fourier analysis needs a field), got {p!r}: e.g. 113"
        )
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise InputError(
            f"fraction must lie strictly between 0 and 1 (the share of pairs trained on), got "
            f"{fraction!r}"
        )
    if round(fraction * p * p) < 1 or round(fraction * p * p) >= p * p:
        raise InputError(
            f"fraction {fraction} of the {p * p} pairs leaves no training or no held-out pair"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    if checkpoint is not None and (
        isinstance(checkpoint, bool) or not isinstance(checkpoint, int) or checkpoint < 1
    ):
        raise InputError(f"checkpoint must be a positive number of steps, got {checkpoint!r}")


def grokking_config(p: int) -> Config:
    return Config(
        d_model=128,
        n_layers=1,
        n_heads=4,
        d_head=32,
        d_mlp=512,
        d_vocab=p + 1,  # 0..p-1 and "=" (p); only the first p logits are read
        n_ctx=3,
        act_fn="relu",
        normalization=None,
    )


def nanda_init(model: Transformer, seed: int) -> Transformer:
    """Nanda et al.'s initialisation: every weight matrix from normal(0, 1/d_model), the
    unembedding from normal(0, 1/d_vocab), biases at zero."""
    generator = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    with torch.no_grad():
        for name, param in model.named_parameters():
            kind = name.split(".")[-1]
            if kind.startswith("W_"):
                scale = cfg.d_vocab if kind == "W_U" else cfg.d_model
                param.copy_(torch.randn(param.shape, generator=generator) / scale**0.5)
            else:
                param.zero_()
    return model


def all_pairs(p: int) -> tuple[Int[Tensor, "pair 3"], Int[Tensor, " pair"]]:
    """Every input ``a b =`` in the order a * p + b, and its answer (a + b) mod p."""
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    return tokens, (a + b) % p


def train_mask(p: int, fraction: float, seed: int) -> Bool[Tensor, " pair"]:
    """round(fraction * p^2) pairs, chosen by a permutation drawn from `seed`, are for training;
    the rest are held out."""
    order = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(p * p, dtype=torch.bool)
    mask[order[: round(fraction * p * p)]] = True
    return mask


def answer_logits(
    model: Transformer, tokens: Int[Tensor, "pair 3"], p: int
) -> Float[Tensor, "pair p"]:
    """The logits of the answers 0..p-1 at the last position, computed for that position only
    (`last_only`: the MLP and the unembedding of the other two would be thrown away; 2.2x fewer
    seconds per step)."""
    return model(tokens, last_only=True)[:, -1, :p]


def weight_norm(model: Transformer) -> float:
    """The L2 norm of all the parameters together (weight decay pulls it down)."""
    squares = torch.stack([param.detach().pow(2).sum() for param in model.parameters()])
    return squares.sum().sqrt().item()


@dataclass
class GrokkingRun:
    """One training run and what it shows, per checkpoint (see the module docstring)."""

    p: int
    fraction: float
    seed: int
    planned_steps: int
    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    weight_norm: list[float] = field(default_factory=list)
    # read from the final embedding, then applied to every checkpoint
    key_frequencies: list[int] = field(default_factory=list)
    restricted_loss: list[float] = field(default_factory=list)
    excluded_loss: list[float] = field(default_factory=list)
    # [checkpoint][frequency 1..(p-1)/2]: each frequency's share of the embedding's squared norm
    frequency_shares: list[list[float]] = field(default_factory=list)
    interrupted: bool = False
    model: Transformer | None = field(default=None, repr=False)
    snapshots: list[dict] = field(default_factory=list, repr=False)

    @property
    def memorise_step(self) -> int | None:
        """The first checkpoint at which every training pair is answered correctly."""
        return next(
            (s for s, a in zip(self.steps, self.train_accuracy, strict=True) if a >= 1.0), None
        )

    @property
    def grok_step(self) -> int | None:
        """The first checkpoint at which at least 99% of the held-out pairs are."""
        return next(
            (s for s, a in zip(self.steps, self.test_accuracy, strict=True) if a >= GROKKED), None
        )

    def __repr__(self) -> str:
        if not self.steps:
            return f"GrokkingRun(p={self.p}, fraction={self.fraction}: no checkpoint)"
        return (
            f"GrokkingRun(p={self.p}, fraction={self.fraction}, seed={self.seed}: "
            f"memorised at step {self.memorise_step}, grokked at step {self.grok_step}, "
            f"test accuracy {self.test_accuracy[-1]:.3f} at step {self.steps[-1]}, key "
            f"frequencies {self.key_frequencies})"
        )

    def to_json(self) -> dict:
        return {
            "p": self.p,
            "fraction": self.fraction,
            "seed": self.seed,
            "planned_steps": self.planned_steps,
            "interrupted": self.interrupted,
            "memorise_step": self.memorise_step,
            "grok_step": self.grok_step,
            "key_frequencies": self.key_frequencies,
            "steps": self.steps,
            "seconds": self.seconds,
            "train_loss": self.train_loss,
            "test_loss": self.test_loss,
            "train_accuracy": self.train_accuracy,
            "test_accuracy": self.test_accuracy,
            "weight_norm": self.weight_norm,
            "restricted_loss": self.restricted_loss,
            "excluded_loss": self.excluded_loss,
            "frequency_shares": self.frequency_shares,
            "model": {
                "d_model": 128,
                "n_heads": 4,
                "d_head": 32,
                "d_mlp": 512,
                "act_fn": "relu",
                "normalization": None,
            },
            "optimizer": {
                "name": "AdamW, full batch",
                "lr": LR,
                "weight_decay": WEIGHT_DECAY,
                "betas": list(BETAS),
                "warmup_steps": WARMUP,
            },
        }


def train_grokking(
    *,
    p: int = DEFAULT_P,
    fraction: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    checkpoint: int | None = None,
) -> GrokkingRun:
    """Train the model of the module docstring on (a + b) mod p with `fraction` of the pairs
    (default DEFAULT_FRACTION) for `steps` full-batch steps (default DEFAULT_STEPS), keeping the
    weights every `checkpoint` steps (default: about CHECKPOINTS checkpoints), then read the key
    frequencies and the progress measures. The weights and the split come from `seed`. Ctrl-C
    stops the training: the run comes back with what was recorded and `interrupted` set."""
    from mechlab.progress import progress_bar

    fraction = DEFAULT_FRACTION if fraction is None else fraction
    steps = DEFAULT_STEPS if steps is None else steps
    check_arguments(p, fraction, steps, checkpoint)
    check_seed(seed)
    every = checkpoint or max(1, steps // CHECKPOINTS)
    model = nanda_init(Transformer(grokking_config(p)), seed)
    tokens, labels = all_pairs(p)
    train = train_mask(p, fraction, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, betas=BETAS)
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / WARMUP)
    )
    run = GrokkingRun(p=p, fraction=fraction, seed=seed, planned_steps=steps, model=model)
    start = time.perf_counter()
    bar = progress_bar(total=steps, desc=f"grokking (a + b) mod {p}", disable=not progress)
    try:
        for step in range(steps + 1):
            if step % every == 0 or step == steps:
                record(run, model, tokens, labels, train, step, time.perf_counter() - start)
                bar.set_postfix(
                    train=f"{run.train_loss[-1]:.3g}",
                    test=f"{run.test_loss[-1]:.3g}",
                    test_acc=f"{run.test_accuracy[-1]:.2f}",
                    refresh=False,
                )
            if step == steps:
                break
            loss = F.cross_entropy(answer_logits(model, tokens[train], p), labels[train])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            warmup.step()
            bar.update(1)
    except KeyboardInterrupt:
        run.interrupted = True
    finally:
        bar.close()
    analyse(run, tokens, labels, train)
    return run


def record(run: GrokkingRun, model: Transformer, tokens, labels, train, step: int, seconds: float):
    """One checkpoint: the weights (kept in memory), losses, accuracies and the weight norm."""
    with torch.no_grad():
        logits = answer_logits(model, tokens, run.p)
    run.steps.append(step)
    run.seconds.append(seconds)
    run.train_loss.append(F.cross_entropy(logits[train], labels[train]).item())
    run.test_loss.append(F.cross_entropy(logits[~train], labels[~train]).item())
    run.train_accuracy.append((logits[train].argmax(-1) == labels[train]).float().mean().item())
    run.test_accuracy.append((logits[~train].argmax(-1) == labels[~train]).float().mean().item())
    run.weight_norm.append(weight_norm(model))
    run.snapshots.append(copy.deepcopy(model.state_dict()))


def analyse(run: GrokkingRun, tokens, labels, train) -> None:
    """Key frequencies from the final embedding; every checkpoint's embedding spectrum and its
    restricted loss (all pairs) and excluded loss (training pairs), with those frequencies."""
    if not run.snapshots:
        return
    p = run.p
    run.key_frequencies = key_frequencies(run.snapshots[-1]["embed.W_E"][:p])
    probe = Transformer(grokking_config(p))
    for snapshot in run.snapshots:
        probe.load_state_dict(snapshot)
        run.frequency_shares.append(frequency_norms(snapshot["embed.W_E"][:p]).tolist())
        with torch.no_grad():
            logits = answer_logits(probe, tokens, p)
        restricted = restricted_logits(logits, run.key_frequencies)
        excluded = excluded_logits(logits, run.key_frequencies)
        run.restricted_loss.append(F.cross_entropy(restricted, labels).item())
        run.excluded_loss.append(F.cross_entropy(excluded[train], labels[train]).item())

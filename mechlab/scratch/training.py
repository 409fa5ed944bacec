"""Watch induction heads form: train small attention-only Transformers (mechlab.scratch.model) from
scratch on data where copying from earlier in the context pays, and score every head as training
goes.

The data (`induction_batch`): sequences of SEQ_LEN tokens, BOS first, the rest drawn uniformly from
the other VOCAB - 1 tokens, and one segment of each repeated: a length L ~ U{MIN_SEGMENT..
MAX_SEGMENT}, a gap G ~ U{0..SEQ_LEN - 1 - 2L} between the two copies, and the first copy's start
uniform over the places where both copies fit; the second copy overwrites the random tokens there.
Tokens inside the second copy (after its first) are predictable by looking back at the first copy,
which is what an induction head does (Olsson et al. 2022); every other token is random and
unpredictable. The length and place vary from sequence to sequence, so no fixed positional offset
predicts the repeat: only matching on content does.

Tried and rejected (the learner may want to know what fails): repeats at one fixed offset, which a
positional head solves without induction; several short repeats per sequence, which stay on the
loss plateau far beyond the time budget; a quarter of the sequences without a repeat, where one
seed learnt a displaced circuit instead (layer-0 heads at offsets 5 and 6, a layer-1 head matching
the one and copying the other, attending 5 positions after the induction target), which copies
just as well but which the induction score does not see.

A one-layer attention-only model cannot implement induction (it needs a previous-token
head composing with a later head), so a one-layer model trained the same way is the control.

At each checkpoint the run records the training loss, the in-context loss on held-out data (the loss
on repeated tokens against the loss on the same tokens' first occurrences), every head's
induction and previous-token scores from `scan_heads` on `to_hooked(model)` with held-out
``[BOS] + r + r`` sequences, and, read from the weights alone (`mechlab.analysis.circuits`), each
head's strongest K-composition from an earlier head: the induction head's keys come to read what
the previous-token head writes.
"""

import time
from dataclasses import dataclass, field
from typing import Literal, cast

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechlab.checks import check_seed
from mechlab.defaults import INDUCTION_THRESHOLD
from mechlab.scratch.convert import to_hooked
from mechlab.scratch.model import Config, Transformer

VOCAB = 256
SEQ_LEN = 64
MIN_SEGMENT, MAX_SEGMENT = 8, (SEQ_LEN - 1) // 2
SCAN_SEQ_LEN = 20  # len(r) of the held-out [BOS] + r + r the heads are scored on
BOS = 0


POSITIONAL: Literal["rotary"] = "rotary"
ROTARY_BASE = 10000.0


def formation_config(n_layers: int, n_heads: int) -> Config:
    """The small attention-only model trained here: d_head 16, LayerNorm, rotary positions (a
    previous-token head is one rotation away; learned positions take far longer to train)."""
    return Config(
        d_model=n_heads * 16,
        n_layers=n_layers,
        n_heads=n_heads,
        d_head=16,
        d_mlp=1,  # unused: attention only
        d_vocab=VOCAB,
        n_ctx=SEQ_LEN,
        attn_only=True,
        positional=POSITIONAL,
        rotary_base=ROTARY_BASE,
    )


def induction_batch(
    batch: int, generator: torch.Generator
) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """Sequences as the module docstring describes; with masks over the *predicted* positions
    (position p means predicting token p from tokens before it) of the tokens that repeat an
    earlier segment and of their first occurrences (each segment's first token excluded: nothing
    predicts where a repeat starts)."""
    tokens = torch.randint(1, VOCAB, (batch, SEQ_LEN), generator=generator)
    tokens[:, 0] = BOS
    repeat = torch.zeros(batch, SEQ_LEN, dtype=torch.bool)
    first = torch.zeros(batch, SEQ_LEN, dtype=torch.bool)

    def draw(low: int, high: int) -> int:  # uniform on low..high
        return int(torch.randint(low, high + 1, (), generator=generator))

    for row in range(batch):
        length = draw(MIN_SEGMENT, MAX_SEGMENT)
        slack = SEQ_LEN - 1 - 2 * length  # positions 1.. hold both copies and what is around them
        gap = draw(0, slack)
        source = 1 + draw(0, slack - gap)
        target = source + length + gap
        tokens[row, target : target + length] = tokens[row, source : source + length]
        repeat[row, target + 1 : target + length] = True
        first[row, source + 1 : source + length] = True
    return tokens, repeat, first & ~repeat


def token_losses(
    model: Transformer, tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos-1"]:
    """Loss of predicting token p from tokens < p, at positions 1..pos-1 ([batch, pos-1])."""
    logits = model(tokens)[:, :-1]
    return F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")


@dataclass
class Checkpoint:
    step: int
    seconds: float
    loss: float  # mean training loss since the previous checkpoint (NaN at step 0: null in JSON)
    repeat_loss: float  # held out: loss on tokens that repeat an earlier segment
    first_loss: float  # held out: loss on the same segments' first occurrences
    induction: list[list[float]]  # [layer][head]
    previous_token: list[list[float]]
    # [layer][head]: the strongest K-composition into each head from an earlier one (0 in layer 0),
    # and that earlier head as [layer, head] (None in layer 0)
    k_composition: list[list[float]] = field(default_factory=list)
    k_composer: list[list[list[int] | None]] = field(default_factory=list)

    @property
    def max_induction(self) -> float:
        return max(max(row) for row in self.induction)

    def to_json(self) -> dict:
        return {
            "step": self.step,
            "seconds": self.seconds,
            "loss": self.loss,
            "in_context_loss": {"repeat": self.repeat_loss, "first": self.first_loss},
            "scores": {"induction": self.induction, "previous_token": self.previous_token},
            "k_composition": {"max": self.k_composition, "from": self.k_composer},
        }


@dataclass
class FormationRun:
    """One model's training record."""

    n_layers: int
    n_heads: int
    seed: int
    steps: int  # planned
    checkpoints: list[Checkpoint] = field(default_factory=list)
    interrupted: bool = False
    model: Transformer | None = field(default=None, repr=False)
    composition_baseline: dict | None = None  # random circuits of this shape (circuits.py)

    @property
    def name(self) -> str:
        return f"{self.n_layers}-layer"

    def phase_change_step(self, threshold: float = INDUCTION_THRESHOLD) -> int | None:
        """The first checkpoint's step at which some head's induction score exceeds `threshold`."""
        return next((c.step for c in self.checkpoints if c.max_induction > threshold), None)

    def to_json(self) -> dict:
        return {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "seed": self.seed,
            "steps": self.steps,
            "interrupted": self.interrupted,
            "phase_change_step": self.phase_change_step(),
            "composition_baseline": self.composition_baseline,
            "checkpoints": [c.to_json() for c in self.checkpoints],
        }


@dataclass
class Formation:
    """The model under study and its one-layer control, trained the same way."""

    runs: list[FormationRun]

    @property
    def interrupted(self) -> bool:
        return any(run.interrupted for run in self.runs)

    def __repr__(self) -> str:
        parts = []
        for run in self.runs:
            last = run.checkpoints[-1] if run.checkpoints else None
            score = f"max induction {last.max_induction:.2f}" if last else "no checkpoint"
            phase = run.phase_change_step()
            parts.append(
                f"{run.name}: {score}"
                + (f", crosses {INDUCTION_THRESHOLD} at step {phase}" if phase is not None else "")
            )
        return f"Formation({'; '.join(parts)})"

    def to_json(self) -> dict:
        return {
            "data": {
                "vocab": VOCAB,
                "seq_len": SEQ_LEN,
                "segment_length": [MIN_SEGMENT, MAX_SEGMENT],
                "scan_seq_len": SCAN_SEQ_LEN,
                "description": __doc__.split("\n\n")[1].replace("\n", " "),
            },
            "threshold": INDUCTION_THRESHOLD,
            "interrupted": self.interrupted,
            "runs": {run.name: run.to_json() for run in self.runs},
        }


def evaluate(model: Transformer, held_out, scan_tokens: Int[Tensor, "batch pos"]) -> dict:
    """In-context losses on the held-out batch, every head's scores on [BOS] + r + r, and each
    head's strongest K-composition from an earlier head (from the weights)."""
    from mechlab.analysis.circuits import composition_scores, ranked_into
    from mechlab.analysis.heads import scan_heads
    from mechlab.analysis.weights import head_weights

    tokens, repeat, first = held_out
    model.eval()
    with torch.no_grad():
        losses = token_losses(model, tokens.to(model.embed.W_E.device)).cpu()
    model.train()
    hooked = to_hooked(model, name=f"{model.cfg.n_layers}-layer")
    scan = scan_heads(hooked, scan_tokens)
    k_scores = composition_scores(head_weights(hooked), "k")
    strongest = [
        [ranked_into(k_scores, layer, head)[0] if layer else None for head in range(scan.n_heads)]
        for layer in range(scan.n_layers)
    ]
    return {
        "repeat_loss": losses[repeat[:, 1:]].mean().item(),
        "first_loss": losses[first[:, 1:]].mean().item(),
        "induction": scan.score("induction").tolist(),
        "previous_token": scan.score("previous_token").tolist(),
        "k_composition": [[row[2] if row else 0.0 for row in layer] for layer in strongest],
        "k_composer": [[list(row[:2]) if row else None for row in layer] for layer in strongest],
    }


def train_formation_run(
    n_layers: int,
    n_heads: int,
    *,
    steps: int,
    seed: int = 0,
    batch: int = 32,
    lr: float = 1e-3,
    eval_every: int = 25,
    progress: bool = False,
    device: str = "cpu",
) -> FormationRun:
    """Train one attention-only model and record checkpoints (see the module docstring). Ctrl-C
    stops the training: the run comes back with what was recorded and `interrupted` set.

    The weights and the data come from `seed`. Two runs agree to about 1e-7 until the phase change
    and cross the induction threshold at the same checkpoint; after it, the order of torch's
    multi-threaded floating-point sums makes their scores differ in the second decimal. Training
    runs on `device` in float32; checkpoints are scored on a CPU copy."""
    from mechlab.analysis.heads import repeated_tokens
    from mechlab.progress import progress_bar

    torch.manual_seed(seed)  # nothing random in training draws from it, but be safe
    model = Transformer(formation_config(n_layers, n_heads), seed=seed).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    data = torch.Generator().manual_seed(seed + 1)
    held_out = induction_batch(256, torch.Generator().manual_seed(10_000 + seed))
    scan_tokens = repeated_tokens(
        to_hooked(model), seq_len=SCAN_SEQ_LEN, batch=32, seed=20_000 + seed
    )
    from mechlab.analysis.circuits import random_baseline
    from mechlab.analysis.weights import head_weights

    run = FormationRun(n_layers, n_heads, seed, steps, model=model)
    run.composition_baseline = random_baseline(head_weights(to_hooked(model)))
    start, recent = time.perf_counter(), cast(list[float], [])
    bar = progress_bar(total=steps, desc=f"training {n_layers}-layer", disable=not progress)
    try:
        for step in range(steps + 1):
            if step % eval_every == 0 or step == steps:
                mean_loss = sum(recent) / len(recent) if recent else float("nan")
                recent = []
                run.checkpoints.append(
                    Checkpoint(
                        step=step,
                        seconds=time.perf_counter() - start,
                        loss=mean_loss,
                        **evaluate(model, held_out, scan_tokens),
                    )
                )
                induction = f"{run.checkpoints[-1].max_induction:.2f}"
            if step == steps:
                break
            tokens, _, _ = induction_batch(batch, data)
            loss = token_losses(model, tokens.to(device)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            recent.append(loss.item())
            bar.set_postfix(loss=f"{recent[-1]:.3f}", induction=induction, refresh=False)
            bar.update(1)
    except KeyboardInterrupt:
        run.interrupted = True
    finally:
        bar.close()
    return run


def formation_bytes(n_layers: int, n_heads: int, batch: int = 32, held_out: int = 256) -> int:
    """An estimate of the memory one run needs, from its shape alone (float32): the parameters
    with their gradients and AdamW's two moments and the hooked copy the scan scores; the
    activations kept for the backward pass (per layer: q, k, v, z, the output and the residual
    stream per position, the attention scores and pattern per head and key); and the held-out
    evaluation's largest layer (scores, mask and pattern for `held_out` sequences). Measured
    peaks (2 x 8, 2 x 32, 2 x 64, 8 x 8 layers x heads): 0.97-1.14x this."""
    cfg = formation_config(n_layers, n_heads)
    params = n_layers * 4 * cfg.d_model * cfg.n_heads * cfg.d_head + 2 * VOCAB * cfg.d_model
    per_layer = batch * SEQ_LEN * (6 * cfg.d_model + 2 * n_heads * SEQ_LEN)
    logits = 2 * batch * SEQ_LEN * VOCAB
    evaluation = held_out * SEQ_LEN * (5 * n_heads * SEQ_LEN + 8 * cfg.d_model + 2 * VOCAB)
    return 4 * (5 * params + n_layers * per_layer + logits + evaluation)


def train_induction(
    *,
    layers: int = 2,
    heads: int = 8,
    steps: int = 1000,
    seed: int = 0,
    eval_every: int = 25,
    progress: bool = False,
    device: str = "auto",
) -> Formation:
    """Train an attention-only model with `layers` layers and its one-layer control (skipped when
    `layers` is 1) on the same data for the same steps; see the module docstring. A shape that
    cannot fit in memory is refused before anything is built (ResourceError, with both figures)."""
    check_seed(seed)
    from mechlab.memory import check_fits
    from mechlab.models.loading import resolve_device

    check_fits(
        formation_bytes(layers, heads),
        what=f"training a {layers}-layer model with {heads} heads per layer",
        fix="use fewer --layers or --heads.",
    )
    device = resolve_device(device)
    runs = []
    for n_layers in dict.fromkeys([layers, 1]):
        run = train_formation_run(
            n_layers,
            heads,
            steps=steps,
            seed=seed,
            eval_every=eval_every,
            progress=progress,
            device=device,
        )
        runs.append(run)
        if run.interrupted:
            break
    return Formation(runs)

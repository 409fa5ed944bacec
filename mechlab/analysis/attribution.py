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

import copy
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from jaxtyping import Float, Int, Real
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.analysis.tokens import (
    PromptOrTokens,
    check_model,
    single_token,
    to_tokens,
    token_strings,
)
from mechlab.checks import check_seed
from mechlab.defaults import (
    ATTRIBUTION_MAX_BUDGET,
    ATTRIBUTION_MAX_STEPS,
    ATTRIBUTION_METHODS,
    ATTRIBUTION_STEP_BUDGET,
)
from mechlab.errors import InputError, MechlabWarning
from mechlab.memory import available_bytes, check_fits

METHODS = ATTRIBUTION_METHODS
BASELINE_METHODS = ("integrated_gradients", "occlusion")  # the methods that use the baseline
MAX_STEPS = ATTRIBUTION_MAX_STEPS
MAX_BUDGET = ATTRIBUTION_MAX_BUDGET
COMPLETENESS_TOLERANCE = 0.01  # |delta| / |target - baseline_target| that integrated gradients meet
QUADRATURES = ("adaptive", "gauss_legendre")
PANEL_NODES = 4  # Gauss-Legendre nodes per panel of the adaptive rule (exact to degree 7)
RANDOMIZATION_THRESHOLD = 0.3  # randomization_check: a method passes below this rank correlation
FRACTIONS = (0.01, 0.05, 0.1, 0.2, 0.5)  # faithfulness: shares of the tokens removed or kept
MEMORY_SHARE = 0.25  # of the memory available, what one batch of the model may take


@dataclass
class TokenAttribution:
    """One attribution of a prompt's tokens to the model's answer (see the module docstring)."""

    model: str
    prompt: str
    answer: str
    wrong: str | None
    tokens: list[str]
    scores: Float[Tensor, " pos"]
    method: str
    target: float  # the model's own logit (difference) at the last position
    baseline_target: float | None  # the same with every token at the baseline (IG, occlusion)
    delta: float | None  # integrated gradients: scores.sum() - (target - baseline_target)
    steps: int | None  # integrated gradients' quadrature nodes, all of them (refinements included)
    baseline: str
    layer: int | None = None  # layer_gradient_x_activation: the block whose input is weighted
    kept_bos: bool = False  # position 0 is the BOS every baseline keeps: scored, never ranked
    max_steps: int | None = None  # integrated gradients: the budget of nodes
    quadrature: str | None = None  # integrated gradients: "adaptive" or "gauss_legendre"

    @property
    def what(self) -> str:
        return f"logit({self.answer!r})" + (
            f" - logit({self.wrong!r})" if self.wrong is not None else ""
        )

    @property
    def ranked(self) -> Float[Tensor, " ranked"]:
        """The scores of the positions that take part in rankings (all but a kept BOS)."""
        return self.scores[1:] if self.kept_bos else self.scores

    @property
    def relative_delta(self) -> float | None:
        """Integrated gradients' completeness gap as a share of what it should add up to."""
        if self.delta is None or self.baseline_target is None:
            return None
        return abs(self.delta) / max(abs(self.target - self.baseline_target), 1e-6)

    def top(self, k: int = 3) -> list[tuple[int, str, float]]:
        """The k ranked positions with the largest scores, as (position, token, score)."""
        first = 1 if self.kept_bos else 0
        order = self.ranked.argsort(descending=True)[:k].tolist()
        return [(first + i, self.tokens[first + i], self.scores[first + i].item()) for i in order]

    def __repr__(self) -> str:
        position, token, score = self.top(1)[0]
        complete = "" if self.delta is None else f", delta {self.delta:+.2g}"
        return (
            f"TokenAttribution({self.model}, {self.method}: {self.what} = {self.target:.3f}; "
            f"top token {token!r} at {position} ({score:+.3g}){complete})"
        )

    def _repr_html_(self) -> str:
        from mechlab.present.views import attribution_html

        return attribution_html([self])

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "answer": self.answer,
            "wrong": self.wrong,
            "tokens": self.tokens,
            "scores": self.scores.tolist(),
            "method": self.method,
            "target": self.target,
            "baseline_target": self.baseline_target,
            "delta": self.delta,
            "relative_delta": self.relative_delta,
            "steps": self.steps,
            "baseline": self.baseline,
            "layer": self.layer,
            "kept_bos": self.kept_bos,
            "max_steps": self.max_steps,
            "quadrature": self.quadrature,
        }


def attribution_prompts() -> list[dict]:
    """The fixed prompt set of the method table, the benchmark and the tests: 57 prompts with
    one-token answers (and a wrong answer each) on which SmolLM2 prefers the answer: factual
    recall, indirect objects, induction-style repeats (``kind``, ``prompt``, ``answer``,
    ``wrong``), from ``mechlab/data/attribution_prompts.jsonl``."""
    import json
    from importlib.resources import files

    text = files("mechlab.data").joinpath("attribution_prompts.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------
# The target as a function of the token embeddings


class Target:
    """The answer's logit (difference) at the last position of one prompt, as a function of the
    prompt's token embeddings: ``target(embed)`` runs a batch of embeddings
    ``[batch, pos, d_model]`` through the model (replacing ``hook_embed``; positional embeddings
    are the model's own) and returns ``[batch]`` targets. Only the answer's and wrong's
    unembedding rows are used."""

    def __init__(self, model: HookedTransformer, tokens: Tensor, answer: int, wrong: int | None):
        self.model, self.tokens = model, tokens
        self.ids = ids = [answer] if wrong is None else [answer, wrong]
        self.sign = torch.tensor([1.0] if wrong is None else [1.0, -1.0], device=tokens.device)
        self.W_U = model.W_U[:, ids]
        self.b_U = model.b_U[ids]
        self.embed = self.embeddings(tokens[0])
        self.kept_bos = starts_with_bos(model, tokens[0])

    def embeddings(self, ids: Int[Tensor, " pos"]) -> Float[Tensor, "pos d_model"]:
        """``hook_embed`` of a token sequence: what the model's embedding layer makes of it."""
        with torch.no_grad():
            _, cache = self.model.run_with_cache(
                ids.unsqueeze(0), stop_at_layer=0, names_filter="hook_embed"
            )
        return cache["hook_embed"][0]

    def baseline(self, baseline: str) -> Float[Tensor, "pos d_model"]:
        """The baseline's embedding at every position, the BOS kept."""
        token = baseline_token(self.model, baseline)
        if token is None:
            base = torch.zeros_like(self.embed)
        else:
            base = self.embeddings(torch.full_like(self.tokens[0], token))
        if self.kept_bos:
            base[0] = self.embed[0]
        return base

    def __call__(self, embed: Float[Tensor, "batch pos d_model"], hooks=()) -> Tensor:
        model = self.model
        batch = embed.shape[0]
        residual = model.run_with_hooks(
            self.tokens.expand(batch, -1),
            stop_at_layer=model.cfg.n_layers,
            fwd_hooks=[("hook_embed", lambda value, hook: embed), *hooks],
        )
        final = residual[:, -1:]
        if model.cfg.normalization_type is not None:
            final = model.ln_final(final)
        logits = final[:, 0] @ self.W_U + self.b_U
        cap = model.cfg.output_logits_soft_cap
        if cap is not None and cap > 0:
            logits = cap * torch.tanh(logits / cap)
        return (logits.float() * self.sign).sum(-1)

    def values(
        self, embed: Float[Tensor, "batch pos d_model"], chunk: int
    ) -> Float[Tensor, " batch"]:
        """The targets of many embeddings, without gradients, in chunks of `chunk`."""
        with torch.no_grad():
            return torch.cat([self(part) for part in embed.split(chunk)])


def baseline_token(model: HookedTransformer, baseline: str) -> int | None:
    """The token a baseline puts at every position (None: the zero embedding); InputError for a
    baseline that is not 'zero', 'pad', 'bos' or one token of this model."""
    if not isinstance(baseline, str) or not baseline:
        raise InputError(
            f"baseline must be 'zero', 'pad', 'bos' or one token, got {baseline!r}: e.g. "
            "--baseline zero"
        )
    if baseline == "zero":
        return None
    if baseline in ("pad", "bos"):
        tokenizer = model.tokenizer
        token = None if tokenizer is None else getattr(tokenizer, f"{baseline}_token_id")
        if token is None:
            raise InputError(
                f"{model.cfg.model_name} has no {baseline} token: use --baseline zero or a "
                "token, e.g. --baseline ' the'"
            )
        return token
    return single_token(model, baseline, "baseline", "--baseline ' the'")


def starts_with_bos(model: HookedTransformer, ids: Int[Tensor, " pos"]) -> bool:
    bos = None if model.tokenizer is None else model.tokenizer.bos_token_id
    return bos is not None and len(ids) > 1 and int(ids[0]) == bos


def sequence_bytes(model: HookedTransformer, pos: int, *, grad: bool) -> int:
    """About how much memory one sequence of `pos` tokens takes in a forward pass: with `grad`,
    what autograd keeps for the backward pass of every block; without, one block's working set."""
    cfg = model.cfg
    d_mlp = cfg.d_mlp or 0
    per_layer = pos * (20 * cfg.d_model + 6 * d_mlp + 4 * cfg.n_heads * pos)
    elements = per_layer * (cfg.n_layers if grad else 2)
    return elements * torch.finfo(cfg.dtype).bits // 8


def chunk_size(model: HookedTransformer, pos: int, *, grad: bool, limit: int) -> int:
    """How many sequences of `pos` tokens to run at once: as many as fit in MEMORY_SHARE of the
    memory available, at least one (ResourceError if even one does not fit), at most `limit`."""
    one = sequence_bytes(model, pos, grad=grad)
    check_fits(
        one,
        what=f"attributing a {pos}-token prompt on {model.cfg.model_name}",
        fix="shorten the prompt or free some memory",
    )
    return max(1, min(limit, int(MEMORY_SHARE * available_bytes()) // max(one, 1)))


# --------------------------------------------------------------------------------------------------
# The methods


def check_method(method: str) -> str:
    if method not in METHODS:
        raise InputError(
            f"unknown attribution method {method!r}: choose one of {', '.join(METHODS)}"
        )
    return method


def check_steps(steps: int, max_steps: int | None = None, quadrature: str = "adaptive") -> int:
    """Integrated gradients' first nodes, budget and rule (InputError when out of range)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InputError(
            f"steps must be a whole number from 1 to {MAX_STEPS}, got {steps!r}: 64 is the "
            "default, and the adaptive rule adds nodes where they are needed"
        )
    if quadrature not in QUADRATURES:
        raise InputError(
            f"unknown quadrature {quadrature!r}: choose one of {', '.join(QUADRATURES)}"
        )
    if max_steps is not None and (
        isinstance(max_steps, bool)
        or not isinstance(max_steps, int)
        or not steps <= max_steps <= MAX_BUDGET
    ):
        raise InputError(
            f"max_steps must be a whole number from steps ({steps}) to {MAX_BUDGET}, got "
            f"{max_steps!r}: it is the adaptive rule's budget of nodes (default "
            f"{ATTRIBUTION_STEP_BUDGET})"
        )
    return steps


def check_layer(model: HookedTransformer, layer: int | None) -> int:
    n_layers = model.cfg.n_layers
    if layer is None:
        return n_layers // 2
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise InputError(
            f"layer {layer!r} is out of range: {model.cfg.model_name} has blocks 0 to "
            f"{n_layers - 1}"
        )
    return layer


def gradients(
    target: Target, embed: Float[Tensor, "batch pos d_model"], names: Sequence[str] = ()
) -> tuple[
    Float[Tensor, " batch"],
    Float[Tensor, "batch pos d_model"],
    list[tuple[Float[Tensor, "batch ..."], Float[Tensor, "batch ..."]]],
]:
    """The targets of a batch of embeddings, their gradient with respect to the embeddings, and the
    activations at hook `names` with the target's gradient with respect to each, by one backward
    pass (``[batch]``, ``[batch, pos, d_model]``, a list of (activation, gradient) pairs)."""
    embed = embed.detach().requires_grad_(True)
    captured: dict[str, Tensor] = {}

    def keep(value, hook):
        captured[hook.name] = value
        return value

    with torch.enable_grad():
        values = target(embed, hooks=[(name, keep) for name in names])
        grads = torch.autograd.grad(values.sum(), [embed, *(captured[n] for n in names)])
    pairs = [(captured[n].detach(), grad) for n, grad in zip(names, grads[1:], strict=True)]
    return values.detach(), grads[0], pairs


def gauss_legendre(steps: int) -> tuple[Float[Tensor, " step"], Float[Tensor, " step"]]:
    """Nodes and weights of Gauss-Legendre quadrature on [0, 1] (float64)."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(weights / 2)


def integrated_gradients(
    target: Target, base: Float[Tensor, "pos d_model"], steps: int, chunk: int
) -> tuple[Float[Tensor, " pos"], float]:
    """Per-token integrated gradients from `base` to the input by one Gauss-Legendre rule of
    `steps` nodes on the whole path (float64), and the baseline's target."""
    alphas, weights = gauss_legendre(steps)
    path = (target.embed - base).double()
    total = torch.zeros_like(path)
    for a, w in zip(alphas.split(chunk), weights.split(chunk), strict=True):
        points = base.double() + a[:, None, None] * path
        _, grad, _ = gradients(target, points.to(base.dtype))
        total += (w[:, None, None] * grad.double()).sum(0)
    baseline_target = target.values(base.unsqueeze(0), 1)[0].item()
    return (total * path).sum(-1), baseline_target


class EmbeddingPath:
    """The straight path from `base` to the target's input embedding, ``alpha`` in [0, 1]: the
    target's values at points of it, and the integrand of integrated gradients there (the gradient
    times (input - base), summed over d_model: ``[n, pos]``, float64), batched in `chunk`s."""

    def __init__(self, target: Target, base: Float[Tensor, "pos d_model"], chunk: int):
        self.target, self.base, self.chunk = target, base, chunk
        self.direction = (target.embed - base).double()

    def points(self, alphas: Float[Tensor, " n"]) -> Float[Tensor, "n pos d_model"]:
        points = self.base.double() + alphas[:, None, None] * self.direction
        return points.to(self.base.dtype)

    def values(self, alphas: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
        return self.target.values(self.points(alphas), self.chunk).double().cpu()

    def integrand(self, alphas: Float[Tensor, " n"]) -> Float[Tensor, "n pos"]:
        parts = []
        for part in alphas.split(self.chunk):
            _, grad, _ = gradients(self.target, self.points(part))
            parts.append((grad.double() * self.direction).sum(-1).cpu())
        return torch.cat(parts)


@dataclass
class Panel:
    """One piece [start, end] of the path: its per-token integral by PANEL_NODES-point
    Gauss-Legendre, the target's change across it (what that integral must add up to), and the
    error the refinement attributes to it."""

    start: float
    end: float
    scores: Float[Tensor, " pos"]
    change: float
    error: float = 0.0

    @property
    def gap(self) -> float:
        """Completeness on this panel alone: the integral's sum minus the target's change."""
        return self.scores.sum().item() - self.change


def integrate_panels(
    path: EmbeddingPath, spans: list[tuple[float, float]], values: dict[float, float]
) -> list[Panel]:
    """Each span's PANEL_NODES-point Gauss-Legendre integral, every node of every span in one
    batched pass (`values`: the target at the spans' ends)."""
    nodes, weights = gauss_legendre(PANEL_NODES)
    start = torch.tensor([a for a, _ in spans], dtype=torch.float64)
    width = torch.tensor([b - a for a, b in spans], dtype=torch.float64)
    alphas = (start[:, None] + width[:, None] * nodes).reshape(-1)
    integrand = path.integrand(alphas).view(len(spans), PANEL_NODES, -1)
    scores = (width[:, None, None] * weights[None, :, None] * integrand).sum(1)
    panels = []
    for (a, b), row in zip(spans, scores, strict=True):
        panel = Panel(a, b, row, values[b] - values[a])
        panel.error = abs(panel.gap)
        panels.append(panel)
    return panels


def adaptive_integrated_gradients(
    path: EmbeddingPath,
    steps: int,
    max_steps: int,
    tolerance: float = COMPLETENESS_TOLERANCE / 2,
    progress: bool = False,
) -> tuple[Float[Tensor, " pos"], float, int]:
    """Per-token integrated gradients along `path` by adaptive composite Gauss-Legendre quadrature
    (float64), the baseline's target and the nodes used.

    Why adaptive: in a model whose blocks start with a norm, the target along the path from the
    zero embedding is flat in places and changes by whole logits within a few thousandths of the
    path in others (SmolLM2: where the scaled embedding falls below the norm's epsilon). One
    high-order rule over the whole path (Captum's) misses those spots at any practical `steps`.

    The rule: ``steps // 2`` nodes on even panels (``steps // (2 * PANEL_NODES)`` of them, at
    least one), then each of them halved (`steps` more nodes). A panel's integral must sum to the
    target's change across it (completeness holds on every piece of the path), so its gap is an
    error estimate computed from forward passes at its ends alone; but the scores can be wrong in
    ways whose sum is right (one token's error cancelling another's), so a panel's error is the
    larger of its gap and half of how far its parent's integral moved when halved. Every round
    halves the panels with more than their share of the allowed error, largest first, until the
    errors add up to less than `tolerance` of ``target - baseline_target`` or the next halving
    would pass `max_steps`. The scores are the sum of the panels' integrals: a quadrature of the
    same path integral, converging to it as the panels shrink (tested against a dense rule).
    `progress`: a bar of the nodes used against the budget (from the zero embedding SmolLM2 takes
    a minute or two)."""
    from mechlab.progress import progress_bar

    with progress_bar(
        total=max_steps, desc="integrated gradients' nodes", disable=not progress, leave=False
    ) as bar:
        return refine(path, steps, max_steps, tolerance, bar)


def refine(
    path: EmbeddingPath, steps: int, max_steps: int, tolerance: float, bar
) -> tuple[Float[Tensor, " pos"], float, int]:
    """adaptive_integrated_gradients' rounds (see there); `bar` is told of every node used."""
    count = max(1, steps // (2 * PANEL_NODES))
    edges = torch.linspace(0, 1, count + 1, dtype=torch.float64)
    values = dict(zip(edges.tolist(), path.values(edges).tolist(), strict=True))
    panels = integrate_panels(
        path, list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True)), values
    )
    for panel in panels:  # the first round halves them all: every panel gets both estimates
        panel.error = math.inf
    used = count * PANEL_NODES
    bar.update(used)
    allowed = tolerance * abs(values[1.0] - values[0.0])
    while sum(p.error for p in panels) > allowed:
        room = (max_steps - used) // (2 * PANEL_NODES)
        share = allowed / len(panels)
        worst = sorted((p for p in panels if p.error > share), key=lambda p: -p.error)[:room]
        if not worst:
            break
        middles = torch.tensor([(p.start + p.end) / 2 for p in worst], dtype=torch.float64)
        values.update(zip(middles.tolist(), path.values(middles).tolist(), strict=True))
        spans = [
            span
            for p, m in zip(worst, middles.tolist(), strict=True)
            for span in ((p.start, m), (m, p.end))
        ]
        halves = integrate_panels(path, spans, values)
        used += len(spans) * PANEL_NODES
        bar.update(len(spans) * PANEL_NODES)
        replaced = {id(p) for p in worst}
        for parent, left, right in zip(worst, halves[::2], halves[1::2], strict=True):
            moved = (parent.scores - left.scores - right.scores).abs().sum().item()
            left.error = max(left.error, moved / 2)
            right.error = max(right.error, moved / 2)
        kept = [p for p in panels if id(p) not in replaced]
        panels = sorted(kept + halves, key=lambda p: p.start)
    scores = torch.stack([p.scores for p in panels]).sum(0)
    return scores, values[0.0], used


def occlusion(
    target: Target, base: Float[Tensor, "pos d_model"], chunk: int
) -> Float[Tensor, " pos"]:
    """How far the target falls when each token alone is replaced by the baseline (a kept BOS:
    0)."""
    first = 1 if target.kept_bos else 0
    positions = torch.arange(first, len(target.embed))
    batch = target.embed.expand(len(positions), -1, -1).clone()
    batch[torch.arange(len(positions)), positions] = base[positions]
    scores = torch.zeros(len(target.embed), dtype=torch.float64)
    own = target.values(target.embed.unsqueeze(0), 1)[0]
    scores[positions] = (own - target.values(batch, chunk)).double().cpu()
    return scores


def rollout(
    layers: list[Float[Tensor, "query_pos key_pos"]], *, residual: str
) -> Float[Tensor, "query_pos key_pos"]:
    """Roll per-layer ``[q, k]`` attention out through the layers (float64): Abnar & Zuidema's
    product of ``0.5 A + 0.5 I`` (residual="half"), or Chefer et al.'s ``R <- R + A R`` from the
    identity (residual="add")."""
    pos = layers[0].shape[-1]
    eye = torch.eye(pos, dtype=torch.float64)
    result = eye.clone()
    for attention in layers:
        attention = attention.double().cpu()
        if residual == "half":
            mixed = 0.5 * attention + 0.5 * eye
            result = (mixed / mixed.sum(-1, keepdim=True)) @ result
        else:
            result = result + attention @ result
    return result


def attribute(
    model: HookedTransformer,
    prompt: PromptOrTokens,
    *,
    answer: str | int,
    wrong: str | int | None = None,
    method: str = "integrated_gradients",
    layer: int | None = None,
    steps: int = 64,
    baseline: str = "zero",
    max_steps: int = ATTRIBUTION_STEP_BUDGET,
    quadrature: str = "adaptive",
    progress: bool = False,
) -> TokenAttribution:
    """Attribute the answer's logit at the last position of `prompt` (or the logit difference
    ``logit(answer) - logit(wrong)``) to the prompt's tokens, by `method` (see the module
    docstring for the methods, the baselines and what is left out).

    The target is a logit, never a probability (probabilities saturate). Positional embeddings are
    not attributed. For integrated gradients the result's `delta` is the completeness gap
    ``scores.sum() - (target - baseline_target)``, and `steps` the nodes used: `steps` first, then
    as many more as the adaptive rule needs for completeness, up to `max_steps` (see
    adaptive_integrated_gradients; ``quadrature="gauss_legendre"``: exactly `steps`). A gap of
    COMPLETENESS_TOLERANCE (1%) or more of ``target - baseline_target`` warns (MechlabWarning) with
    the figure and the remedy. `progress`: a bar of integrated gradients' nodes.
    """
    check_model(model)
    check_method(method)
    check_steps(steps, max_steps, quadrature)
    baseline_token(model, baseline)
    if layer is not None:
        check_layer(model, layer)
    target = prepare(model, prompt, answer, wrong)
    return run_method(
        target,
        method,
        layer=layer,
        steps=steps,
        baseline=baseline,
        prompt=prompt,
        max_steps=max_steps,
        quadrature=quadrature,
        progress=progress,
    )


def prepare(
    model: HookedTransformer, prompt: PromptOrTokens, answer: str | int, wrong: str | int | None
) -> Target:
    tokens = to_tokens(model, prompt)
    if tokens.shape[0] != 1:
        raise InputError(
            f"token attribution takes one prompt, got a batch of {tokens.shape[0]}: call it once "
            "per prompt"
        )
    answer_id = single_token(model, answer, "answer", "--answer ' Paris'")
    wrong_id = None
    if wrong is not None:
        wrong_id = single_token(model, wrong, "wrong answer", "--wrong ' London'")
        if wrong_id == answer_id:
            raise InputError(
                f"the answer and the wrong answer are the same token "
                f"{token_strings(model, [answer_id])[0]!r}: their difference is zero by "
                "definition; pass a different --wrong, or none to attribute the answer's logit"
            )
    return Target(model, tokens, answer_id, wrong_id)


def run_method(
    target: Target,
    method: str | Callable,
    *,
    layer: int | None,
    steps: int,
    baseline: str,
    prompt: PromptOrTokens,
    max_steps: int = ATTRIBUTION_STEP_BUDGET,
    quadrature: str = "adaptive",
    progress: bool = False,
) -> TokenAttribution:
    model, tokens = target.model, target.tokens
    pos = tokens.shape[1]
    base = target.baseline(baseline) if method in BASELINE_METHODS else None
    own_target = target.values(target.embed.unsqueeze(0), 1)[0].item()
    baseline_target = delta = used_steps = used_layer = None
    if callable(method):  # a planted method, for the tests of the checks
        scores = torch.as_tensor(method(model, tokens)).double()
    elif method in ("saliency", "gradient_x_input"):
        _, grad, _ = gradients(target, target.embed.unsqueeze(0))
        grad = grad[0].double()
        if method == "saliency":
            scores = grad.norm(dim=-1)
        else:
            scores = (grad * target.embed.double()).sum(-1)
    elif method == "integrated_gradients":
        base = cast(Tensor, base)  # integrated gradients is a BASELINE_METHOD
        if quadrature == "gauss_legendre":
            chunk = chunk_size(model, pos, grad=True, limit=steps)
            scores, baseline_target = integrated_gradients(target, base, steps, chunk)
            used_steps = steps
        else:
            chunk = chunk_size(model, pos, grad=True, limit=max(steps, 2 * PANEL_NODES))
            path = EmbeddingPath(target, base, chunk)
            scores, baseline_target, used_steps = adaptive_integrated_gradients(
                path, steps, max_steps, progress=progress
            )
        delta = scores.sum().item() - (own_target - baseline_target)
    elif method == "layer_gradient_x_activation":
        used_layer = check_layer(model, layer)
        hook = f"blocks.{used_layer}.hook_resid_pre"
        _, _, [(activation, grad)] = gradients(target, target.embed.unsqueeze(0), [hook])
        scores = (activation[0].double() * grad[0].double()).sum(-1)
    elif method == "attention_rollout":
        hooks = [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)]
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in hooks)
        scores = rollout([cache[n][0].mean(0) for n in hooks], residual="half")[-1]
    elif method == "attention_x_gradient":
        hooks = [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)]
        _, _, pairs = gradients(target, target.embed.unsqueeze(0), hooks)
        layers = [(a[0].double() * g[0].double()).clamp(min=0).mean(0) for a, g in pairs]
        relevance = rollout(layers, residual="add")
        scores = relevance[-1] - torch.eye(pos, dtype=torch.float64)[-1]
    else:  # occlusion
        chunk = chunk_size(model, pos, grad=False, limit=pos)
        base = cast(Tensor, base)  # occlusion is a BASELINE_METHOD
        scores = occlusion(target, base, chunk)
        baseline_target = target.values(base.unsqueeze(0), 1)[0].item()
    names = token_strings(model, target.ids)
    result = TokenAttribution(
        model=model.cfg.model_name,
        prompt=prompt if isinstance(prompt, str) else "".join(token_strings(model, tokens[0])),
        answer=names[0],
        wrong=names[1] if len(names) > 1 else None,
        tokens=token_strings(model, tokens[0]),
        scores=scores.detach().cpu().float(),
        method=getattr(method, "__name__", "custom") if callable(method) else method,
        target=own_target,
        baseline_target=baseline_target,
        delta=delta,
        steps=used_steps,
        baseline=baseline,
        layer=used_layer,
        kept_bos=target.kept_bos,
        max_steps=None if used_steps is None or quadrature != "adaptive" else max_steps,
        quadrature=None if used_steps is None else quadrature,
    )
    if result.relative_delta is not None and not result.relative_delta < COMPLETENESS_TOLERANCE:
        remedy = (
            f"the adaptive rule used its whole budget: raise max_steps (--max-steps) above "
            f"{max_steps}"
            if quadrature == "adaptive"
            else "use quadrature='adaptive', which places nodes where the target changes"
        )
        warnings.warn(
            MechlabWarning(
                f"integrated gradients on {result.model} miss completeness by "
                f"{result.relative_delta:.1%} at {used_steps} steps (delta {delta:+.3g} of "
                f"{own_target - (baseline_target or 0.0):+.3g}): {remedy}"
            ),
            stacklevel=3,
        )
    return result


# --------------------------------------------------------------------------------------------------
# Sanity checks: does the attribution depend on the model (randomization), and does it find the
# tokens the model needs (faithfulness)?


def spearman(a: Real[Tensor, " n"], b: Real[Tensor, " n"]) -> float:
    """Spearman's rank correlation (ties share their mean rank); NaN when either is constant."""

    def ranks(x: Tensor) -> Tensor:
        x = x.double()
        order = x.argsort()
        rank = torch.empty_like(x)
        rank[order] = torch.arange(len(x), dtype=torch.float64)
        for value in x.unique():  # mean rank of ties
            tied = x == value
            rank[tied] = rank[tied].mean()
        return rank

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = (ra.norm() * rb.norm()).item()
    return float("nan") if denominator == 0 else (ra @ rb).item() / denominator


def reinitialise(module: torch.nn.Module, cfg, generator: torch.Generator) -> None:
    """Draw `module`'s parameters again as TransformerLens initialises a model of this config:
    weight matrices (``W_*``) from N(0, initializer_range), biases 0, norm weights 1."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            leaf = name.split(".")[-1].lstrip("_")
            if leaf.startswith("W_"):
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.copy_(noise * cfg.initializer_range)
            elif leaf.startswith("b"):
                param.zero_()
            elif leaf == "w":
                param.fill_(1.0)


@dataclass
class RandomizationCheck:
    """Adebayo et al.'s cascading model-parameter randomization: the weights are re-initialised from
    the top (unembedding, then each block from the last down, then the embeddings), the attribution
    recomputed at each stage, and compared with the trained model's by the Spearman rank
    correlation of |scores|. An attribution that explains the *model* loses its ranking once the
    weights above the embeddings are random: `passes` when that correlation is below `threshold`.
    Methods that multiply by the input (gradient x input, integrated gradients) are expected to keep
    some of the input's structure until the embeddings themselves are randomized (Kokhlikyan et al.
    2021 found the same)."""

    model: str
    prompt: str
    method: str
    stages: list[str]  # "trained", "unembed", "L<i>" (every block from i up random), "embed"
    correlations: list[float]  # per stage, with the trained model's |scores|
    attributions: list[TokenAttribution] = field(repr=False)
    threshold: float = RANDOMIZATION_THRESHOLD
    seed: int = 0

    @property
    def above_embeddings(self) -> float:
        """The correlation when everything above the embeddings is random (the verdict's)."""
        return self.correlations[self.stages.index("embed") - 1]

    @property
    def passes(self) -> bool:
        return self.above_embeddings < self.threshold

    def __repr__(self) -> str:
        verdict = "passes" if self.passes else "FAILS"
        return (
            f"RandomizationCheck({self.model}, {self.method}: rank correlation with the trained "
            f"model {self.above_embeddings:+.2f} once every block is random, {verdict} "
            f"(threshold {self.threshold}); {len(self.stages)} stages)"
        )

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "method": self.method,
            "stages": self.stages,
            "correlations": self.correlations,
            "above_embeddings": self.above_embeddings,
            "threshold": self.threshold,
            "passes": self.passes,
            "seed": self.seed,
        }


def randomization_check(
    model: HookedTransformer,
    prompt: PromptOrTokens,
    *,
    answer: str | int,
    method: str | Callable = "integrated_gradients",
    wrong: str | int | None = None,
    layer: int | None = None,
    steps: int = 64,
    baseline: str = "zero",
    seed: int = 0,
    every: int = 1,
    progress: bool = False,
    max_steps: int = ATTRIBUTION_STEP_BUDGET,
    quadrature: str = "adaptive",
) -> RandomizationCheck:
    """Cascading randomization (see RandomizationCheck) on a copy of `model` (the model itself is
    untouched): stage "unembed" re-initialises the final norm and the unembedding, then each stage
    re-initialises `every` more blocks from the last down, and "embed" the embeddings. `method` is
    one of METHODS, or a function ``(model, tokens) -> [pos] scores`` (to test the check itself).
    `seed` draws the new weights. Integrated gradients are refined (up to `max_steps`) for the
    trained model only: a random model's need not be complete, and its ranking is all the check
    compares."""
    check_model(model)
    if not callable(method):
        check_method(method)
    check_steps(steps, max_steps, quadrature)
    check_seed(seed)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise InputError(f"every must be a whole number of blocks, at least 1, got {every!r}")
    prepare(model, prompt, answer, wrong)  # bad input fails before the model is copied
    copied = copy.deepcopy(model, memo={id(model.tokenizer): model.tokenizer})
    generator = torch.Generator().manual_seed(seed)
    n_layers = model.cfg.n_layers
    stages: list[tuple[str, list[torch.nn.Module]]] = [("trained", [])]
    stages.append(("unembed", [m for m in (copied.ln_final, copied.unembed) if m is not None]))
    for top in range(n_layers - 1, -1, -every):
        low = max(0, top - every + 1)
        stages.append((f"L{low}", [copied.blocks[i] for i in range(low, top + 1)]))
    embeddings: list[torch.nn.Module] = [copied.embed]
    if hasattr(copied, "pos_embed"):
        embeddings.append(copied.pos_embed)
    stages.append(("embed", embeddings))
    results = []
    bar = None
    if progress:
        from mechlab.progress import progress_bar

        bar = progress_bar(total=len(stages), desc=f"randomizing {model.cfg.model_name}")
    try:
        for name, modules in stages:
            for module in modules:
                reinitialise(module, copied.cfg, generator)
            with warnings.catch_warnings():  # a random model's IG need not be complete
                warnings.simplefilter("ignore", MechlabWarning)
                target = prepare(copied, prompt, answer, wrong)
                results.append(
                    run_method(
                        target,
                        method,
                        layer=layer,
                        steps=steps,
                        baseline=baseline,
                        prompt=prompt,
                        max_steps=max_steps if name == "trained" else steps,
                        quadrature=quadrature,
                    )
                )
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    trained = results[0].ranked.abs()
    correlations = [spearman(trained, r.ranked.abs()) for r in results]
    return RandomizationCheck(
        model=model.cfg.model_name,
        prompt=results[0].prompt,
        method=results[0].method,
        stages=[name for name, _ in stages],
        correlations=correlations,
        attributions=results,
        seed=seed,
    )


def bootstrap_interval(
    values: Float[Tensor, " sample"], generator: torch.Generator, samples: int = 2000
) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean of `values` (resampled with
    replacement)."""
    values = values.double()
    picks = torch.randint(len(values), (samples, len(values)), generator=generator)
    means = values[picks].mean(1)
    return means.quantile(0.025).item(), means.quantile(0.975).item()


@dataclass
class Faithfulness:
    """ERASER's comprehensiveness and sufficiency (DeYoung et al. 2020), with the model's logit
    (difference) as the score: for each share q of `fractions`, the top-k tokens of the ranking
    (k = ceil(q n), at least 1) are replaced by the baseline (positions do not shift; a kept BOS
    stays). Comprehensiveness = target - target with the top-k removed (higher: the ranking found
    tokens the model needs); sufficiency = target - target with only the top-k kept (lower: they
    are enough). Each is averaged over the shares (AOPC) per prompt, then over prompts, with a 95%
    bootstrap interval; the same for random rankings is the reference."""

    model: str
    method: str
    baseline: str
    fractions: tuple[float, ...]
    comprehensiveness: Float[Tensor, " prompt"]  # per prompt AOPC, logits
    sufficiency: Float[Tensor, " prompt"]
    random_comprehensiveness: Float[Tensor, " prompt"]  # mean over the random rankings
    random_sufficiency: Float[Tensor, " prompt"]
    intervals: dict[str, tuple[float, float]]
    seconds: float  # attribution time per prompt

    def summary(self) -> dict[str, float]:
        return {
            "comprehensiveness": self.comprehensiveness.mean().item(),
            "sufficiency": self.sufficiency.mean().item(),
            "random_comprehensiveness": self.random_comprehensiveness.mean().item(),
            "random_sufficiency": self.random_sufficiency.mean().item(),
        }

    def __repr__(self) -> str:
        s, n = self.summary(), len(self.comprehensiveness)
        return (
            f"Faithfulness({self.model}, {self.method}, {n} prompt{'s' * (n != 1)}: "
            f"comprehensiveness {s['comprehensiveness']:.2f} (random "
            f"{s['random_comprehensiveness']:.2f}), sufficiency {s['sufficiency']:.2f} (random "
            f"{s['random_sufficiency']:.2f}))"
        )

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "method": self.method,
            "baseline": self.baseline,
            "fractions": list(self.fractions),
            "prompts": len(self.comprehensiveness),
            **self.summary(),
            "intervals": {key: list(value) for key, value in self.intervals.items()},
            "per_prompt": {
                "comprehensiveness": self.comprehensiveness.tolist(),
                "sufficiency": self.sufficiency.tolist(),
                "random_comprehensiveness": self.random_comprehensiveness.tolist(),
                "random_sufficiency": self.random_sufficiency.tolist(),
            },
            "seconds_per_prompt": self.seconds,
        }


def erased(
    target: Target,
    base: Float[Tensor, "pos d_model"],
    order: Int[Tensor, " ranked"],
    fractions: Sequence[float],
) -> Float[Tensor, "2 fraction"]:
    """For each share: the target with the top-k of `order` removed, and with only they kept
    (``[2, len(fractions)]``). `order` indexes the ranked positions, best first."""
    first = 1 if target.kept_bos else 0
    n = len(target.embed) - first
    batch = []
    for keep_only in (False, True):
        for q in fractions:
            chosen = torch.zeros(len(target.embed), dtype=torch.bool)
            chosen[order[: max(1, math.ceil(q * n))] + first] = True
            replaced = ~chosen if keep_only else chosen
            replaced[:first] = False  # a kept BOS is never replaced
            batch.append(torch.where(replaced[:, None], base, target.embed))
    chunk = chunk_size(target.model, len(target.embed), grad=False, limit=len(batch))
    return target.values(torch.stack(batch), chunk).double().cpu().view(2, len(fractions))


def faithfulness(
    model: HookedTransformer,
    prompts: Sequence[PromptOrTokens],
    *,
    answers: Sequence[str | int],
    wrongs: Sequence[str | int | None] | None = None,
    method: str = "integrated_gradients",
    layer: int | None = None,
    steps: int = 64,
    baseline: str = "zero",
    fractions: Sequence[float] = FRACTIONS,
    random_rankings: int = 10,
    seed: int = 0,
    progress: bool = False,
    max_steps: int = ATTRIBUTION_STEP_BUDGET,
    quadrature: str = "adaptive",
) -> Faithfulness:
    """Comprehensiveness and sufficiency of `method` over `prompts` (see Faithfulness), against
    `random_rankings` random rankings per prompt (seeded), removed tokens replaced by
    `baseline` (``"zero"`` by default; a token embedding if given)."""
    check_model(model)
    check_method(method)
    check_steps(steps, max_steps, quadrature)
    wrongs = [None] * len(prompts) if wrongs is None else list(wrongs)
    if not len(prompts) == len(answers) == len(wrongs) or not prompts:
        raise InputError(
            f"faithfulness needs one answer (and wrong answer, if any) per prompt: got "
            f"{len(prompts)} prompts, {len(answers)} answers, {len(wrongs)} wrong answers"
        )
    if not fractions or not all(0 < q <= 1 for q in fractions):
        raise InputError(f"fractions must be shares in (0, 1], got {list(fractions)!r}")
    generator = torch.Generator().manual_seed(seed)
    comp, suff, rand_comp, rand_suff, seconds = [], [], [], [], 0.0
    items = zip(prompts, answers, wrongs, strict=True)
    if progress:
        from mechlab.progress import progress_bar

        items = progress_bar(items, total=len(prompts), desc=f"faithfulness of {method}")
    for prompt, answer, wrong in items:
        target = prepare(model, prompt, answer, wrong)
        start = time.perf_counter()
        result = run_method(
            target,
            method,
            layer=layer,
            steps=steps,
            baseline=baseline,
            prompt=prompt,
            max_steps=max_steps,
            quadrature=quadrature,
        )
        seconds += time.perf_counter() - start
        base = target.baseline(baseline)
        order = result.ranked.argsort(descending=True)
        removed, kept = result.target - erased(target, base, order, fractions)
        comp.append(removed.mean())
        suff.append(kept.mean())
        randoms = [
            result.target
            - erased(target, base, torch.randperm(len(order), generator=generator), fractions)
            for _ in range(random_rankings)
        ]
        rand_comp.append(torch.stack([r[0].mean() for r in randoms]).mean())
        rand_suff.append(torch.stack([r[1].mean() for r in randoms]).mean())
    values = {
        "comprehensiveness": torch.stack(comp).float(),
        "sufficiency": torch.stack(suff).float(),
        "random_comprehensiveness": torch.stack(rand_comp).float(),
        "random_sufficiency": torch.stack(rand_suff).float(),
    }
    intervals = {key: bootstrap_interval(value, generator) for key, value in values.items()}
    intervals["comprehensiveness_minus_random"] = bootstrap_interval(
        values["comprehensiveness"] - values["random_comprehensiveness"], generator
    )
    intervals["sufficiency_minus_random"] = bootstrap_interval(
        values["sufficiency"] - values["random_sufficiency"], generator
    )
    return Faithfulness(
        model=model.cfg.model_name,
        method=method,
        baseline=baseline,
        fractions=tuple(fractions),
        intervals=intervals,
        seconds=seconds / len(prompts),
        **values,
    )

"""Integrated gradients' path integral: one Gauss-Legendre rule over the whole path (Captum's), or
adaptive composite Gauss-Legendre quadrature that halves the pieces of the path where the integral
disagrees with the target's change (see adaptive_integrated_gradients)."""

import math
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from mechlab.analysis.attribution.target import Target, gradients

COMPLETENESS_TOLERANCE = 0.01  # |delta| / |target - baseline_target| that integrated gradients meet
PANEL_NODES = 4  # Gauss-Legendre nodes per panel of the adaptive rule (exact to degree 7)


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

"""The Fourier view of modular addition (Nanda et al. 2023, "Progress measures for grokking via
mechanistic interpretability").

A network that has grokked (a + b) mod p embeds each number x as waves cos(w x), sin(w x) at a few
*key frequencies* w = 2 pi k / p, combines them into cos(w (a + b)) and sin(w (a + b)) with
trigonometric identities, and reads out the answer c with cos(w (a + b - c)) =
cos(w (a + b)) cos(w c) + sin(w (a + b)) sin(w c). So its logits, seen as a function of the input
pair (a, b) for each output c, live in the span of the directions cos(w (a + b)) and
sin(w (a + b)) of the key frequencies. Two progress measures follow:

- **restricted loss**: keep only those directions of the logits (plus each output's mean over the
  pairs), evaluated on every pair: low once the algorithm is there;
- **excluded loss**: remove those directions, evaluated on the training pairs: rises as the
  training set's fit comes to rest on the algorithm instead of on memorisation.

Everything here takes tensors (an embedding, logits over all p^2 pairs), not a model. Logits are
laid out as rows (a, b) in the order a * p + b, one column per output c.
"""

import math

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechlab.errors import InputError

# A frequency is key when its share of the embedding's (non-constant) squared norm is at least
# this many times the share of the largest one: the grokked model's few frequencies each carry a
# large share, the rest almost none.
KEY_SHARE_OF_LARGEST = 0.25


def n_frequencies(p: int) -> int:
    """Frequencies k = 1 .. (p - 1) / 2 of the real Fourier basis on Z_p (p odd)."""
    return (p - 1) // 2


def fourier_basis(p: int) -> tuple[Float[Tensor, "p p"], list[str]]:
    """The real Fourier basis of functions on 0..p-1: the constant, then cos(2 pi k x / p) and
    sin(2 pi k x / p) for k = 1 .. (p - 1) / 2, each a unit vector (rows), with their names."""
    if p < 3 or p % 2 == 0:
        raise InputError(f"the Fourier basis here is for odd p >= 3, got {p}")
    x = torch.arange(p, dtype=torch.float64)
    rows, names = [torch.ones(p, dtype=torch.float64)], ["const"]
    for k in range(1, n_frequencies(p) + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
        names += [f"cos {k}", f"sin {k}"]
    basis = torch.stack(rows)
    return (basis / basis.norm(dim=-1, keepdim=True)).float(), names


def frequency_norms(embedding: Float[Tensor, "p d_model"]) -> Float[Tensor, " frequency"]:
    """The squared norm of the embedding's component at each frequency k = 1 .. (p - 1) / 2 (its
    cos and sin rows in the Fourier basis together), as a share of the non-constant total."""
    p = embedding.shape[0]
    basis, _ = fourier_basis(p)
    coefficients = basis.double() @ embedding.double()  # [basis row, d_model]
    per_row = coefficients.pow(2).sum(-1)[1:]  # the constant left out
    per_frequency = per_row.reshape(n_frequencies(p), 2).sum(-1)
    return (per_frequency / per_frequency.sum()).float()


def key_frequencies(
    embedding: Float[Tensor, "p d_model"], share_of_largest: float = KEY_SHARE_OF_LARGEST
) -> list[int]:
    """The frequencies whose share of the embedding's squared norm is at least `share_of_largest`
    times the largest share (see KEY_SHARE_OF_LARGEST), in increasing order."""
    shares = frequency_norms(embedding)
    keep = shares >= share_of_largest * shares.max()
    return [k + 1 for k in keep.nonzero()[:, 0].tolist()]


def sum_directions(p: int, frequencies: list[int]) -> Float[Tensor, "direction pair"]:
    """Unit vectors over the p^2 pairs (a, b) (index a * p + b): cos(w (a + b)) and
    sin(w (a + b)) for each frequency k (w = 2 pi k / p). For distinct frequencies in 1..(p-1)/2
    they are orthonormal."""
    a = torch.arange(p, dtype=torch.float64)
    total = (a[:, None] + a[None, :]).flatten()
    rows = []
    for k in frequencies:
        if not 1 <= k <= n_frequencies(p):
            raise InputError(f"frequency {k} is not in 1..{n_frequencies(p)} for p = {p}")
        w = 2 * math.pi * k / p
        rows += [torch.cos(w * total), torch.sin(w * total)]
    if not rows:
        return torch.zeros(0, p * p)
    directions = torch.stack(rows)
    return (directions / directions.norm(dim=-1, keepdim=True)).float()


def key_component(
    logits: Float[Tensor, "pair d_vocab"], frequencies: list[int]
) -> Float[Tensor, "pair d_vocab"]:
    """The part of the logits (as functions of the pair, one per output) in the span of the
    frequencies' cos(w (a + b)) and sin(w (a + b)) directions."""
    p = math.isqrt(logits.shape[0])
    directions = sum_directions(p, frequencies).to(logits.device).double()
    return (directions.T @ (directions @ logits.double())).to(logits.dtype)


def restricted_logits(
    logits: Float[Tensor, "pair d_vocab"], frequencies: list[int]
) -> Float[Tensor, "pair d_vocab"]:
    """Only the key frequencies' directions, plus each output's mean over the pairs (the bias a
    direction of frequency >= 1 cannot carry)."""
    return key_component(logits, frequencies) + logits.mean(0, keepdim=True)


def excluded_logits(
    logits: Float[Tensor, "pair d_vocab"], frequencies: list[int]
) -> Float[Tensor, "pair d_vocab"]:
    """The logits with the key frequencies' directions removed."""
    return logits - key_component(logits, frequencies)


def mean_loss(
    logits: Float[Tensor, "pair d_vocab"],
    labels: Int[Tensor, " pair"],
    rows: Bool[Tensor, " pair"] | None = None,
) -> float:
    """Cross-entropy of the logits against the labels, over `rows` (default: every pair)."""
    if rows is not None:
        logits, labels = logits[rows], labels[rows]
    return F.cross_entropy(logits.float(), labels).item()


def accuracy(
    logits: Float[Tensor, "pair d_vocab"],
    labels: Int[Tensor, " pair"],
    rows: Bool[Tensor, " pair"] | None = None,
) -> float:
    if rows is not None:
        logits, labels = logits[rows], labels[rows]
    return (logits.argmax(-1) == labels).float().mean().item()

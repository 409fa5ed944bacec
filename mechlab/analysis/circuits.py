"""Circuits read from the weights alone, without running the model (Elhage et al. 2021, "A
Mathematical Framework for Transformer Circuits").

Each head is two low-rank maps of the residual stream. Its QK circuit ``W_QK = W_Q W_K^T``
(d_model x d_model, rank d_head) says which keys a query attends to; its OV circuit
``W_OV = W_V W_O`` says what it writes where it attends. Both are unchanged by any invertible
change of the head's internal basis (W_Q -> W_Q M, W_K -> W_K M^-T; W_V -> W_V N, W_O -> N^-1 W_O),
so they, not the four matrices, are what the head computes. A later head *composes* with an
earlier one when it reads what the earlier one wrote: through its queries (Q-composition), its
keys (K-composition: the induction circuit) or its values (V-composition). The composition score
of the earlier head's OV circuit A with the later head's B is ``|A B|_F / (|A|_F |B|_F)`` (B is
W_QK, W_QK^T or W_OV), as TransformerLens's ``all_composition_scores`` defines it.

What the weights leave out, and what is done about it:
- **Norms.** Each norm's weight is folded into the matrices that read its output (``fold_ln``),
  and a LayerNorm's centring into the matrices on both sides of it, exactly as TransformerLens
  processes weights; models loaded without that processing give the same circuits. The division by
  the residual stream's norm is a per-position scalar and is left out, as in the paper. Gemma's
  norm after the attention (``ln1_post``) multiplies W_O by its weight; its query and key norms
  multiply W_Q and W_K by theirs: the weights-only view keeps their direction and leaves out their
  per-position scale.
- **Biases** are ignored, as in the paper: b_Q, b_K (a query- or key-independent term in the
  scores), b_V and b_O (a constant written whatever the head attends to).
- **Rotary positions** (Llama, SmolLM2, Gemma) rotate queries and keys by an angle that depends on
  the position; ``W_Q W_K^T`` is the QK circuit of a query and a key at the same position
  (rotation by zero), so composition through rotary heads is an approximation, and a positional
  QK pattern is not a weights-only quantity at all (it is skipped, with that reason).
- **Grouped-query attention** (SmolLM2, Gemma): a query head composes with the weights of the
  key/value head it shares, ``W_K[h // group]`` and ``W_V[h // group]``, as the model uses them.

Everything is computed on d_head x d_head cores, never on d_model x d_model products: for
``A = V O`` (V: d_model x d_head) write ``V = Q R`` (QR); then ``|A X|_F = |R O X|_F`` for any X,
and likewise on the right. The products that touch d_model are shared by the query heads of a
key/value group. The vocabulary-sized circuits (``W_E W_OV W_U``) are handled the same way: their
eigenvalues are those of a d_head x d_head matrix.
"""

import functools
from dataclasses import dataclass, field

import einops
import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.analysis.tokens import check_model
from mechlab.analysis.weights import HeadWeights, copying_scores, head_weights
from mechlab.checks import check_count
from mechlab.defaults import INDUCTION_THRESHOLD, PREVIOUS_TOKEN_THRESHOLD
from mechlab.errors import DataError, InputError
from mechlab.labels import KIND_NAMES, head_label
from mechlab.moved import moved_names

KINDS = ("q", "k", "v")
BASELINE_SAMPLES = (
    200  # random pairs drawn for the baseline (its spread is narrow: std < 2% of the mean)
)
# Input tokens sampled for ov_top1 when the vocabulary is larger than this. Its cost is mostly
# fixed (every head's W_O times W_U), the rest grows with the sample: on SmolLM2, 5.8 s at 128
# tokens, 9.2 s at 256 (benchmarks/bench_circuits.py); 128 keeps all of its circuits near 9 s.
OV_TOKENS = 128
POSITIONAL_QK_POSITIONS = 32  # positions shown in the positional QK pattern
SEED = 0


# --------------------------------------------------------------------------------------------------
# Composition


def r_factor(matrix: Float[Tensor, "... d_model d_head"]) -> Float[Tensor, "... d_head d_head"]:
    """R in matrix = Q R (QR; Q has orthonormal columns, so it keeps lengths): for any Y,
    |matrix @ Y|_F = |R @ Y|_F, with R only d_head x d_head."""
    return torch.linalg.qr(matrix, mode="r").R


@dataclass
class _Side:
    """One side of a composition, as cores: the left head's OV circuit `A = V O` is kept as
    ``core = R_V O`` ([d_head, d_model]); a right circuit ``B = b1 b2`` as ``b1`` (per query head
    or per key/value head) and ``R_b2^T`` ([d_head, d_head] per query head, or None), so that
    ``|A B|_F = |core b1 R_b2^T|_F``."""

    inner: Tensor
    outer: Tensor | None = None


def _left(weights: HeadWeights) -> Tensor:
    """[layer, n_heads, d_head, d_model]: R_V O for every head's OV circuit."""
    return weights.kv(r_factor(weights.W_V)) @ weights.W_O


def _right(weights: HeadWeights, kind: str) -> _Side:
    """The later head's circuit for each kind: QK (Q-composition), QK^T (K), OV (V)."""
    transpose = lambda matrix: matrix.transpose(-1, -2)  # noqa: E731
    if kind == "q":  # W_Q W_K^T: b1 = W_Q per query head; |X W_K^T| = |X R_K^T|
        return _Side(weights.W_Q @ transpose(weights.kv(r_factor(weights.W_K))))
    if kind == "k":  # W_K W_Q^T: b1 = W_K per key/value head; |X W_Q^T| = |X R_Q^T|
        return _Side(weights.W_K, transpose(r_factor(weights.W_Q)))
    if kind == "v":  # W_V W_O: b1 = W_V per key/value head; |X W_O| = |X R_{O^T}^T|
        return _Side(weights.W_V, transpose(r_factor(transpose(weights.W_O))))
    raise InputError(f"unknown composition kind {kind!r}: choose one of {', '.join(KINDS)}")


def composition_scores(
    weights: HeadWeights, kind: str
) -> Float[Tensor, "layer n_heads layer n_heads"]:
    """Every earlier head's OV circuit composed with every later head's circuit of `kind` ("q",
    "k" or "v"): scores[l1, h1, l2, h2] = |A B|_F / (|A|_F |B|_F), zero unless l1 < l2."""
    n_layers, n_heads = weights.n_layers, weights.n_heads
    left, right = _left(weights), _right(weights, kind)
    left_norms = left.flatten(-2).norm(dim=-1)  # |R_V O| = |V O|
    scores = torch.zeros(n_layers, n_heads, n_layers, n_heads)
    for later in range(1, n_layers):
        earlier = left[:later].flatten(0, 1)  # [earlier heads, d_head, d_model]
        # the only product over d_model, once per right factor (shared by a key/value group)
        cores = einops.einsum(
            earlier,
            right.inner[later],
            "earlier d_head_a d_model, inner d_model d_head_b -> earlier inner d_head_a d_head_b",
        )
        if right.inner.shape[1] != n_heads:
            cores = cores.repeat_interleave(weights.group, dim=1)
        right_cores = right.inner[later]
        if right.outer is not None:
            cores = cores @ right.outer[later]
            if right.inner.shape[1] != n_heads:
                right_cores = right_cores.repeat_interleave(weights.group, dim=0)
            right_cores = right_cores @ right.outer[later]
        right_norms = right_cores.flatten(-2).norm(dim=-1)  # [n_heads]
        values = cores.flatten(-2).norm(dim=-1) / left_norms[:later].flatten()[:, None]
        scores[:later, :, later] = (values / right_norms).reshape(later, n_heads, n_heads)
    return scores


def dense_composition(
    weights: HeadWeights, kind: str, earlier: tuple[int, int], later: tuple[int, int]
) -> float:
    """One composition score from the d_model x d_model matrices themselves: the reference the
    cores are checked against (slow for all pairs, fine for one)."""
    (l1, h1), (l2, h2) = earlier, later
    group = weights.group
    A = weights.W_V[l1, h1 // group] @ weights.W_O[l1, h1]
    W_QK = weights.W_Q[l2, h2] @ weights.W_K[l2, h2 // group].T
    B = {
        "q": W_QK,
        "k": W_QK.T,
        "v": weights.W_V[l2, h2 // group] @ weights.W_O[l2, h2],
    }[kind]
    return float((A @ B).norm() / (A.norm() * B.norm()))


def random_baseline(
    weights: HeadWeights, samples: int = BASELINE_SAMPLES, seed: int = SEED
) -> dict:
    """The composition score of random circuits of the model's shapes: each factor (V, O, and the
    two factors of the right circuit) drawn with independent normal entries, `samples` pairs. The
    score does not depend on the factors' scales, only on d_model and d_head, so one baseline
    serves Q-, K- and V-composition (and every model of the same shapes: it is cached)."""
    d_model, d_head = weights.W_Q.shape[-2:]
    return dict(_random_baseline(d_model, d_head, samples, seed))


@functools.lru_cache(maxsize=16)
def _random_baseline(d_model: int, d_head: int, samples: int, seed: int) -> dict:
    values = random_composition_scores(d_model, d_head, samples, seed)
    return {
        "mean": float(values.mean()),
        "p95": float(values.quantile(0.95)),
        "samples": samples,
        "how": f"{samples} pairs of random circuits of the model's shapes (d_model {d_model}, "
        f"d_head {d_head}), every factor's entries drawn independently from a normal "
        f"distribution (the score does not depend on their scale), seed {seed}",
    }


def bartlett_r(
    rng, samples: int, d_model: int, d_head: int
) -> Float[Tensor, "sample d_head d_head"]:
    """R of the QR decomposition of `samples` Gaussian d_model x d_head matrices, drawn directly
    (Bartlett 1933): upper triangular, R_ii = sqrt(chi2(d_model - i)), R_ij ~ N(0, 1) above."""
    R = np.triu(rng.standard_normal((samples, d_head, d_head)), k=1)
    diagonal = np.sqrt(rng.chisquare(d_model - np.arange(d_head), size=(samples, d_head)))
    R[:, np.arange(d_head), np.arange(d_head)] = diagonal
    return torch.from_numpy(R).float()


def random_composition_scores(
    d_model: int, d_head: int, samples: int, seed: int
) -> Float[Tensor, " sample"]:
    """Composition scores of `samples` pairs of random circuits A = V O, B = B1 B2 whose four
    factors have independent N(0, 1) entries, drawn without forming them. Only the R factors of
    V, B1 and B2^T matter, and they can be drawn directly (`bartlett_r`). A Gaussian O keeps its
    distribution under a rotation of d_model, so B1 may be taken along the first d_head
    coordinates: O B1 = O1 R_B1 with O1 the first d_head columns of O, and
    |R_V O|^2 = |R_V O1|^2 + |R_V O2|^2, where O2 O2^T (the other columns) is a Wishart matrix,
    drawn as L L^T with L = bartlett_r(d_model - d_head)^T. Everything is d_head x d_head; equal
    in distribution to drawing the four matrices (tests/test_circuits.py compares the two)."""
    rng = np.random.default_rng(seed)
    R_V, R_B1, R_B2 = (bartlett_r(rng, samples, d_model, d_head) for _ in range(3))
    O1 = torch.from_numpy(rng.standard_normal((samples, d_head, d_head))).float()
    if d_model - d_head >= d_head:
        rest = bartlett_r(rng, samples, d_model - d_head, d_head).transpose(-1, -2)
    else:  # too few columns for a full-rank Wishart: draw them
        rest = torch.from_numpy(rng.standard_normal((samples, d_head, d_model - d_head))).float()
    right = R_B1 @ R_B2.transpose(-1, -2)  # |B1 B2|_F = |R_B1 R_B2^T|_F
    core = R_V @ O1 @ right
    left_norm = (
        (R_V @ O1).flatten(1).pow(2).sum(-1) + (R_V @ rest).flatten(1).pow(2).sum(-1)
    ).sqrt()
    return core.flatten(1).norm(dim=-1) / (left_norm * right.flatten(1).norm(dim=-1))


# --------------------------------------------------------------------------------------------------
# The full OV circuit W_E W_OV W_U: copying


def ov_top1(
    weights: HeadWeights,
    tokens: int | None = OV_TOKENS,
    seed: int = SEED,
    progress: bool = False,
) -> tuple[Float[Tensor, "layer n_heads"], int]:
    """For each head, the fraction of input tokens t whose own token is the largest output of the
    full OV circuit's row t (ARENA 1.2's measure of a copying head). Rows are computed in chunks of
    the vocabulary, so the d_vocab x d_vocab matrix never exists; when the vocabulary has more
    than `tokens` tokens, `tokens` input tokens are sampled (without replacement, seeded) and each
    row is still compared with every output token. Returns the fractions and how many input
    tokens were used.

    The cost is that of multiplying every head's W_O by W_U (n_layers x n_heads x d_head x
    d_model x d_vocab: about 1 TFLOP on SmolLM2), or, for few tokens, each sampled row by W_U,
    whichever is smaller."""
    from mechlab.progress import progress_bar

    d_vocab = weights.W_E.shape[0]
    if tokens is None or tokens >= d_vocab:
        ids = torch.arange(d_vocab)
    else:
        ids = torch.randperm(d_vocab, generator=torch.Generator().manual_seed(seed))[:tokens]
        ids = ids.sort().values
    n_layers, n_heads = weights.n_layers, weights.n_heads
    d_model, d_head = weights.W_Q.shape[-2:]
    n = len(ids)
    heads = n_layers * n_heads
    # row t of a head's circuit is (W_E[t] W_V) (W_O W_U): either form W_O W_U for every head
    # (cheaper for many tokens) or W_E[t] W_V W_O for every token (cheaper for few)
    through_heads = d_head * d_model + n * d_head < n * d_model
    inputs = einops.einsum(
        weights.W_E[ids],
        weights.kv(weights.W_V),
        "token d_model, layer n_heads d_model d_head -> layer n_heads token d_head",
    )
    W_O = weights.W_O.flatten(0, 1)  # [heads, d_head, d_model]
    inputs = inputs.flatten(0, 1)  # [heads, token, d_head]
    if not through_heads:
        inputs = torch.bmm(inputs, W_O)  # [heads, token, d_model]
    unembed_rows = weights.W_U.T.contiguous()  # [d_vocab, d_model]: chunks are contiguous
    best = torch.full((heads, n), float("-inf"))
    own = torch.empty(heads, n)  # each row's own token's output, from the same products
    rows = torch.arange(n)
    chunk = max(1, (512 << 20) // (heads * max(n, d_head) * 4))  # ~512 MB of products at a time
    for start in progress_bar(
        range(0, d_vocab, chunk), desc="OV circuits' top-1", disable=not progress, leave=False
    ):
        W_U = unembed_rows[start : start + chunk].T  # [d_model, chunk]
        if through_heads:  # one tall product, [heads * d_head, d_model] x [d_model, chunk]
            readout = (W_O.reshape(heads * d_head, d_model) @ W_U).reshape(heads, d_head, -1)
        else:
            readout = W_U
        logits = inputs @ readout  # [heads, token, chunk]
        best = torch.maximum(best, logits.amax(-1))
        inside = (ids >= start) & (ids < start + W_U.shape[1])
        own[:, inside] = logits[:, rows[inside], ids[inside] - start]
    top1 = (own >= best).float().mean(-1)  # a tie with another token counts as top
    return top1.reshape(n_layers, n_heads), n


# --------------------------------------------------------------------------------------------------
# Positional QK (learned positional embeddings only)


def positional_patterns(
    weights: HeadWeights, positions: int = POSITIONAL_QK_POSITIONS
) -> Float[Tensor, "layer n_heads query_pos key_pos"]:
    """Each head's attention pattern if the residual stream held only the positional embeddings:
    softmax over keys <= query of W_pos W_Q W_K^T W_pos^T / scale (learned positions only)."""
    if weights.W_pos is None:
        raise InputError("a positional QK pattern needs learned positional embeddings")
    W_pos = weights.W_pos[:positions]
    queries = einops.einsum(
        W_pos, weights.W_Q, "pos d_model, layer n_heads d_model d_head -> layer n_heads pos d_head"
    )
    keys = einops.einsum(
        W_pos,
        weights.kv(weights.W_K),
        "pos d_model, layer n_heads d_model d_head -> layer n_heads pos d_head",
    )
    scores = queries @ keys.transpose(-1, -2) / weights.attn_scale
    future = torch.ones(len(W_pos), len(W_pos), dtype=torch.bool).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(-1)


# --------------------------------------------------------------------------------------------------
# The result


@dataclass
class Circuits:
    """What a model's heads compute according to their weights alone: composition scores between
    every earlier and later head, a random baseline to read them against, each head's copying
    score and OV top-1 rate, and (learned positions only) the positional QK pattern of the head
    that attends most to the previous position."""

    model: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    composition: dict[str, Float[Tensor, "layer n_heads layer n_heads"]]  # "q", "k", "v"
    baseline: dict  # mean, p95, samples, how
    copying: Float[Tensor, "layer n_heads"]
    ov_top1: Float[Tensor, "layer n_heads"]
    ov_top1_tokens: int  # input tokens ov_top1 was measured on
    d_vocab: int
    positional_qk: dict | None  # head, pattern, previous_token (per head); None: see the note
    positional_qk_note: str
    notes: list[str] = field(default_factory=list)

    def top(self, kind: str = "k", k: int = 10) -> list[tuple[int, int, int, int, float]]:
        """The k strongest compositions of `kind` as (earlier layer, head, later layer, head,
        score), strongest first (only pairs whose first head is in an earlier layer compose)."""
        self.check_kind(kind)
        check_count(k, "k", minimum=1)
        layers = torch.arange(self.n_layers)
        earlier = (layers[:, None, None, None] < layers[None, None, :, None]).expand(
            self.composition[kind].shape
        )
        values = self.composition[kind].masked_fill(~earlier, float("-inf")).flatten()
        order = values.argsort(descending=True)[: min(k, int(earlier.sum()))].tolist()
        n_heads = self.n_heads
        rows = []
        for index in order:
            l1, rest = divmod(index, n_heads * self.n_layers * n_heads)
            h1, rest = divmod(rest, self.n_layers * n_heads)
            l2, h2 = divmod(rest, n_heads)
            rows.append((l1, h1, l2, h2, values[index].item()))
        return rows

    def into(self, layer: int, head: int, kind: str = "k") -> list[tuple[int, int, float]]:
        """Every earlier head's composition into (layer, head), strongest first."""
        self.check_kind(kind)
        check_count(layer, "layer", minimum=0, maximum=self.n_layers - 1)
        check_count(head, "head", minimum=0, maximum=self.n_heads - 1)
        return ranked_into(self.composition[kind], layer, head)

    @staticmethod
    def check_kind(kind: str) -> None:
        if kind not in KINDS:
            raise InputError(f"unknown composition kind {kind!r}: choose one of {', '.join(KINDS)}")

    def __repr__(self) -> str:
        if self.n_layers < 2:
            strongest = "one layer: nothing to compose"
        else:
            l1, h1, l2, h2, score = self.top("k", 1)[0]
            strongest = (
                f"strongest K-composition {head_label(l1, h1)} -> {head_label(l2, h2)} "
                f"{score:.3f} ({score / self.baseline['mean']:.1f}x baseline)"
            )
        layer, head = divmod(int(self.copying.argmax()), self.n_heads)
        return (
            f"Circuits({self.model}: {self.n_layers}x{self.n_heads} heads, {strongest}, most "
            f"copying {head_label(layer, head)} {self.copying.max():.2f})"
        )

    def _repr_html_(self) -> str:
        from mechlab.present.circuits import circuits_html

        return circuits_html(self)

    def to_json(self, top: int = 10) -> dict:
        return {
            "model": self.model,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            # six decimals: scores lie in [0, 1], and the full matrices are most of the file
            "composition": {
                kind: value.double().round(decimals=6).tolist()
                for kind, value in self.composition.items()
            },
            "top": {kind: [list(row) for row in self.top(kind, top)] for kind in self.composition},
            "baseline": self.baseline,
            "copying": self.copying.tolist(),
            "ov_top1": self.ov_top1.tolist(),
            "ov_top1_tokens": self.ov_top1_tokens,
            "d_vocab": self.d_vocab,
            "positional_qk": None
            if self.positional_qk is None
            else {
                "head": list(self.positional_qk["head"]),
                "pattern": self.positional_qk["pattern"].tolist(),
                "previous_token": self.positional_qk["previous_token"].tolist(),
            },
            "positional_qk_note": self.positional_qk_note,
            "notes": self.notes,
        }


def ranked_into(
    scores: Float[Tensor, "layer n_heads layer n_heads"], layer: int, head: int
) -> list[tuple[int, int, float]]:
    """Every earlier head's score into (layer, head) as (layer, head, score), strongest first."""
    values = scores[:layer, :, layer, head].flatten()
    n_heads = scores.shape[1]
    order = values.argsort(descending=True).tolist()
    return [(i // n_heads, i % n_heads, values[i].item()) for i in order]


NOTES = [
    "Norm weights folded into the matrices that read their output (fold_ln), LayerNorm's centring "
    "into the weights on both sides; the per-position division by the residual stream's norm is "
    "left out.",
    "Biases (b_Q, b_K, b_V, b_O) are ignored, as in Elhage et al. (2021).",
]


def circuits(
    model: HookedTransformer, *, ov_tokens: int | None = OV_TOKENS, check: bool = True
) -> Circuits:
    """Read `model`'s circuits from its weights: no forward pass (see the module docstring).

    `ov_tokens` input tokens are sampled for `ov_top1` when the vocabulary is larger (None: every
    token). Before returning, the strongest pair of each kind is recomputed from the
    d_model x d_model matrices; a disagreement is a DataError (`check=False` skips it)."""
    check_model(model)
    cfg = model.cfg
    if ov_tokens is not None and (isinstance(ov_tokens, bool) or ov_tokens < 1):
        raise InputError(f"ov_tokens must be a positive integer or None, got {ov_tokens!r}")
    weights = head_weights(model)
    composition = {kind: composition_scores(weights, kind) for kind in KINDS}
    if check and cfg.n_layers > 1:
        check_against_dense(weights, composition)
    top1, used = ov_top1(weights, ov_tokens)
    notes = list(NOTES)
    if cfg.positional_embedding_type == "rotary":
        notes.append(
            "Rotary positions: W_Q W_K^T is the QK circuit of a query and key at the same "
            "position; at other distances the model rotates one against the other."
        )
    if weights.group > 1:
        notes.append(
            f"Grouped-query attention: each of the {cfg.n_heads} query heads per layer composes "
            f"with the key/value head it shares (one per {weights.group} query heads)."
        )
    if weights.W_pos is not None:
        patterns = positional_patterns(weights)
        previous = patterns.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)  # [layer, n_heads]
        layer, head = divmod(int(previous.argmax()), cfg.n_heads)
        positional = {
            "head": (layer, head),
            "pattern": patterns[layer, head],
            "previous_token": previous,
        }
        note = (
            f"W_pos W_QK W_pos^T / scale over the first {patterns.shape[-1]} positions, masked and "
            f"softmaxed; {head_label(layer, head)} puts the most weight on the previous position "
            f"({previous[layer, head]:.2f} on average)."
        )
    else:
        positional = None
        note = (
            "skipped: with rotary positions the query-key product depends on both positions "
            "through the rotation applied inside the head, not on a positional embedding added "
            "to the residual stream, so a positional QK pattern is not a weights-only quantity "
            "here."
        )
    return Circuits(
        model=cfg.model_name,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        n_kv_heads=weights.W_K.shape[1],
        composition=composition,
        baseline=random_baseline(weights),
        copying=copying_scores(weights),
        ov_top1=top1,
        ov_top1_tokens=used,
        d_vocab=weights.W_E.shape[0],
        positional_qk=positional,
        positional_qk_note=note,
        notes=notes,
    )


def check_against_dense(weights: HeadWeights, composition: dict[str, Tensor]) -> None:
    """The strongest pair of each kind, recomputed from the d_model x d_model matrices, must agree
    with the cores (to float32 rounding)."""
    n_heads = weights.n_heads
    for kind, scores in composition.items():
        index = int(scores.argmax())
        l1, rest = divmod(index, n_heads * weights.n_layers * n_heads)
        h1, rest = divmod(rest, weights.n_layers * n_heads)
        l2, h2 = divmod(rest, n_heads)
        dense = dense_composition(weights, kind, (l1, h1), (l2, h2))
        core = float(scores[l1, h1, l2, h2])
        if abs(dense - core) > 1e-4 * max(1.0, abs(dense)):
            raise DataError(
                f"{KIND_NAMES[kind]} of {head_label(l1, h1)} into {head_label(l2, h2)}: the cores "
                f"give {core:.6f} but the d_model x d_model product gives {dense:.6f}; this is a "
                "bug in mechlab, please report it"
            )


# --------------------------------------------------------------------------------------------------
# The induction circuit


@dataclass
class InductionHead:
    """One induction head and the earlier heads whose output its keys read."""

    layer: int
    head: int
    induction: float  # its induction score (from the scan)
    composers: list[tuple[int, int, float, float]]  # (layer, head, K-composition, prev-token)

    @property
    def strongest_is_previous_token(self) -> bool:
        return bool(self.composers) and self.composers[0][3] > PREVIOUS_TOKEN_THRESHOLD

    @property
    def previous_token_rank(self) -> int | None:
        """Where the first previous-token head comes among the composers (1 = strongest)."""
        return next(
            (
                rank
                for rank, row in enumerate(self.composers, 1)
                if row[3] > PREVIOUS_TOKEN_THRESHOLD
            ),
            None,
        )

    def to_json(self, top: int) -> dict:
        return {
            "head": [self.layer, self.head],
            "induction": self.induction,
            "composers": [list(row) for row in self.composers[:top]],
            "strongest_is_previous_token": self.strongest_is_previous_token,
            "previous_token_rank": self.previous_token_rank,
        }


@dataclass
class InductionCircuit:
    """The induction circuit read from the weights: for each top induction head of a behavioural
    scan, the earlier heads ranked by K-composition into it, with their previous-token scores."""

    model: str
    heads: list[InductionHead]
    baseline: dict

    def __repr__(self) -> str:
        if not self.heads:
            return f"InductionCircuit({self.model}: no induction head in a later layer)"
        first = self.heads[0]
        if not first.composers:
            label = head_label(first.layer, first.head)
            return f"InductionCircuit({self.model}: {label} has no earlier heads)"
        l1, h1, score, previous = first.composers[0]
        verdict = (
            "a previous-token head"
            if first.strongest_is_previous_token
            else "not a previous-token head"
        )
        return (
            f"InductionCircuit({self.model}: {head_label(first.layer, first.head)} reads keys "
            f"from {head_label(l1, h1)} (K-composition {score:.3f}, "
            f"{score / self.baseline['mean']:.1f}x baseline; {verdict}, previous-token "
            f"{previous:.2f})"
        )

    def to_json(self, top: int = 5) -> dict:
        return {
            "model": self.model,
            "previous_token_threshold": PREVIOUS_TOKEN_THRESHOLD,
            "baseline": self.baseline,
            "heads": [head.to_json(top) for head in self.heads],
        }


def induction_circuit(
    model: HookedTransformer,
    scan=None,
    *,
    top: int = 3,
    circuits_result: Circuits | None = None,
    threshold: float = INDUCTION_THRESHOLD,
) -> InductionCircuit:
    """For each of the `top` strongest induction heads of `scan` (a HeadScan; `scan_heads(model)`
    when None) that lie above layer 0 and score above `threshold` (the best one is kept even
    below it), rank the earlier heads by K-composition into it, with their previous-token scores
    from the scan. `circuits_result` reuses circuits already read from this model."""
    check_model(model)
    from mechlab.analysis.heads import scan_heads

    if scan is None:
        scan = scan_heads(model)
    if (scan.n_layers, scan.n_heads) != (model.cfg.n_layers, model.cfg.n_heads):
        raise InputError(
            f"the scan is of a {scan.n_layers}x{scan.n_heads} model, not of {model.cfg.model_name} "
            f"({model.cfg.n_layers}x{model.cfg.n_heads}): scan this model"
        )
    if circuits_result is not None:
        k_composition, baseline = circuits_result.composition["k"], circuits_result.baseline
    else:  # only what is needed here: K-composition and its baseline
        weights = head_weights(model)
        k_composition, baseline = composition_scores(weights, "k"), random_baseline(weights)
    candidates = [
        row for row in scan.top("induction", scan.scores["induction"].numel()) if row[0] > 0
    ]
    chosen = [row for row in candidates[:top] if row[2] > threshold] or candidates[:1]
    previous = scan.score("previous_token")
    heads = []
    for layer, head, score in chosen:
        composers = [
            (l1, h1, value, float(previous[l1, h1]))
            for l1, h1, value in ranked_into(k_composition, layer, head)
        ]
        heads.append(InductionHead(layer, head, score, composers))
    return InductionCircuit(model=model.cfg.model_name, heads=heads, baseline=baseline)


# moved to mechlab.analysis.weights (the old paths still work)
__getattr__ = moved_names(
    __name__, dict.fromkeys(["per_head", "unembed_embed"], "mechlab.analysis.weights")
)

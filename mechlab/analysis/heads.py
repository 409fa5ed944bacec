"""Scan every attention head for induction, previous-token, duplicate-token, current-token and
first-token behaviour on repeated random tokens, plus an OV-circuit copying score.

Induction heads (Olsson et al. 2022, "In-context Learning and Induction Heads") attend from a token
to the token right after an earlier copy of it. On ``[BOS] + r + r`` with r random, every query in
the second copy has exactly one such target, so a head's induction score is easy to read off its
attention pattern. The scan runs the model once over the batch, in chunks, with a hook on each
layer's pattern that reduces it to per-head sums on the spot and keeps nothing else: peak memory is
one layer's pattern, not a cache of all of them.
"""

import weakref
from dataclasses import dataclass, field

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.analysis.tokens import bos_token_id, check_model, next_token_loss, ordinary_token_ids
from mechlab.checks import check_seed
from mechlab.defaults import INDUCTION_THRESHOLD
from mechlab.errors import InputError
from mechlab.labels import scored_heads_label
from mechlab.memory import available_bytes, check_fits
from mechlab.moved import moved_names
from mechlab.progress import progress_bar

PATTERN_SCORES = ["induction", "previous_token", "duplicate_token", "current_token", "first_token"]
# TransformerLens's head_detector scores, computed its way (see tl_scores below).
TL_SCORES = [
    f"tl_{head}_{measure}"
    for head in ["previous_token", "duplicate_token", "induction"]
    for measure in ["mul", "abs"]
]
SCORE_NAMES = [*PATTERN_SCORES, "copying", *TL_SCORES]


def check_scan_shape(model: HookedTransformer, seq_len: int, batch: int) -> None:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise InputError(f"seq_len must be an integer >= 1, got {seq_len!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"batch must be an integer >= 1, got {batch!r}")
    if 2 * seq_len + 1 > model.cfg.n_ctx:
        raise InputError(
            f"2*seq_len+1 = {2 * seq_len + 1} tokens do not fit {model.cfg.model_name}'s context "
            "window of "
            f"{model.cfg.n_ctx}: use seq_len <= {(model.cfg.n_ctx - 1) // 2}"
        )
    check_fits(
        scan_memory(model, seq_len, batch),
        what=f"a head scan of {batch} x {2 * seq_len + 1} tokens",
        fix="use a smaller --batch or --seq-len.",
    )


def sequence_bytes(model: HookedTransformer, total: int) -> int:
    """What one sequence of `total` tokens holds at the peak of a scan's forward pass: its logits,
    a few residual-sized temporaries, and one layer's scores, pattern and a float32 copy."""
    cfg = model.cfg
    return total * (cfg.d_vocab * 4 + cfg.d_model * 4 * 8 + cfg.n_heads * total * 4 * 3)


def scan_chunk_size(model: HookedTransformer, total: int, batch: int) -> int:
    """Sequences per forward pass: about 8k tokens (the attention then costs memory linear in the
    sequence length: (8192 / total) x n_heads x total^2), and fewer when a quarter of the memory
    available now cannot hold that many; at least one (`check_scan_shape` refuses what cannot fit
    even then)."""
    fitting = available_bytes() // 4 // sequence_bytes(model, total)
    return max(1, min(batch, 8192 // total, fitting))


def scan_memory(model: HookedTransformer, seq_len: int, batch: int) -> int:
    """Bytes a scan holds at its peak, roughly: the token ids and per-position losses of the whole
    batch, plus one chunk's forward pass."""
    total = 2 * seq_len + 1
    chunk = scan_chunk_size(model, total, batch)
    return batch * total * (8 + 4) + chunk * sequence_bytes(model, total)


def repeated_tokens(
    model: HookedTransformer, *, seq_len: int = 50, batch: int = 10, seed: int = 0
) -> Int[Tensor, "batch pos"]:
    """``[BOS] + r + r`` for `batch` random sequences r of `seq_len` ordinary tokens: shape
    [batch, 2*seq_len+1]. Drawn with torch's CPU generator from `seed`, so every machine gets the
    same."""
    check_model(model)
    check_scan_shape(model, seq_len, batch)
    check_seed(seed)
    candidates = ordinary_token_ids(model)
    generator = torch.Generator().manual_seed(seed)
    random = candidates[torch.randint(0, len(candidates), (batch, seq_len), generator=generator)]
    bos = torch.full((batch, 1), bos_token_id(model), dtype=random.dtype)
    return torch.cat([bos, random, random], dim=1)


@dataclass
class HeadScan:
    """Per-head scores ([n_layers, n_heads] tensors, by name) and the in-context loss curve."""

    model: str
    n_layers: int
    n_heads: int
    seq_len: int
    batch: int
    seed: int
    tokens: Int[Tensor, "batch pos"]
    scores: dict[str, Float[Tensor, "layer n_heads"]] = field(default_factory=dict)
    # mean loss predicting token p+1 from position p, for p in 0 .. 2*seq_len-1
    loss_by_position: Float[Tensor, " pos-1"] = field(default_factory=lambda: torch.zeros(0))

    def __repr__(self) -> str:
        best = self.top("induction", 1)[0] if self.scores else None
        headline = f", best induction head {scored_heads_label([best])}" if best else ""
        return (
            f"HeadScan({self.model}: {self.n_layers} layers x {self.n_heads} heads on "
            f"{self.batch} x "
            f"[BOS]+r+r with len(r)={self.seq_len}{headline})"
        )

    @property
    def loss_first_half(self) -> float:
        return self.loss_by_position[: self.seq_len].mean().item()

    @property
    def loss_second_half(self) -> float:
        return self.loss_by_position[self.seq_len :].mean().item()

    def _repr_html_(self) -> str:
        from mechlab.present.heads import head_scan_html

        return head_scan_html(self)

    def score(self, name: str) -> Float[Tensor, "layer n_heads"]:
        if name not in self.scores:
            raise InputError(f"unknown score {name!r}: choose one of {', '.join(self.scores)}")
        return self.scores[name]

    def top(self, name: str, k: int = 5) -> list[tuple[int, int, float]]:
        """The k highest-scoring heads as (layer, head, score), best first."""
        values = self.score(name)
        order = values.flatten().argsort(descending=True)[:k].tolist()
        return [(i // self.n_heads, i % self.n_heads, values.flatten()[i].item()) for i in order]

    def heads_above(self, name: str, threshold: float) -> list[tuple[int, int, float]]:
        values = self.score(name)
        return [head for head in self.top(name, values.numel()) if head[2] > threshold]

    def to_json(self, threshold: float = INDUCTION_THRESHOLD) -> dict:
        return {
            "model": self.model,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "seq_len": self.seq_len,
            "batch": self.batch,
            "seed": self.seed,
            "threshold": threshold,
            "scores": {name: value.tolist() for name, value in self.scores.items()},
            "induction_heads": [list(head) for head in self.heads_above("induction", threshold)],
            "loss_by_position": self.loss_by_position.tolist(),
            "loss_first_half": self.loss_first_half,
            "loss_second_half": self.loss_second_half,
        }


def scan_heads(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"] | None = None,
    *,
    seq_len: int = 50,
    batch: int = 10,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool = False,
) -> HeadScan:
    """Score every head of `model` on repeated random tokens (or on given ``[BOS] + r + r`` tokens).

    `chunk_size` sequences go through the model at a time (default: `scan_chunk_size`).
    """
    check_model(model)
    if tokens is None:
        tokens = repeated_tokens(model, seq_len=seq_len, batch=batch, seed=seed)
    else:
        seq_len = check_repeated(model, tokens)
    scores, loss_by_position = pattern_pass(
        model, tokens, seq_len, chunk_size=chunk_size, progress=progress
    )
    scores["copying"] = copying_scores(model)
    cfg = model.cfg
    return HeadScan(
        model=cfg.model_name,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        seq_len=seq_len,
        batch=len(tokens),
        seed=seed,
        tokens=tokens.cpu(),
        scores={name: scores[name] for name in SCORE_NAMES},
        loss_by_position=loss_by_position,
    )


def pattern_pass(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    seq_len: int,
    *,
    chunk_size: int | None = None,
    progress: bool = False,
) -> tuple[dict[str, Float[Tensor, "layer n_heads"]], Float[Tensor, " prediction"]]:
    """The token-dependent part of the scan: one forward pass in chunks, each layer's pattern
    reduced to per-head score sums by a hook as soon as it exists, and the loss at each position."""
    cfg = model.cfg
    batch, total = tokens.shape
    chunk_size = chunk_size or scan_chunk_size(model, total, batch)
    sums = {
        name: torch.zeros(cfg.n_layers, cfg.n_heads, dtype=torch.float64)
        for name in PATTERN_SCORES + TL_SCORES
    }
    losses = []
    chunks = list(tokens.split(chunk_size))
    for chunk in progress_bar(
        chunks, desc=f"scanning heads of {cfg.model_name}", disable=not progress, leave=False
    ):
        chunk = chunk.to(cfg.device)

        def reduce_pattern(pattern: Tensor, hook, chunk: Tensor = chunk) -> None:
            layer = hook.layer()
            pattern = pattern.float()  # scores are averaged in float32 whatever the model's dtype
            for name, value in pattern_scores(pattern, seq_len).items():
                sums[name][layer] += value.sum(0).double()
            for name, value in tl_scores(pattern, chunk).items():
                sums[name][layer] += value.sum(0).double()

        with torch.inference_mode():
            logits = model.run_with_hooks(
                chunk, fwd_hooks=[(lambda name: name.endswith("attn.hook_pattern"), reduce_pattern)]
            )
            losses.append(next_token_loss(logits, chunk))
            del logits
    return {name: (value / batch).float() for name, value in sums.items()}, torch.cat(losses).mean(
        0
    )


def check_repeated(model: HookedTransformer, tokens: Tensor) -> int:
    """Check that `tokens` is a batch of ``[BOS] + r + r``; return len(r)."""
    if tokens.ndim != 2 or tokens.shape[1] < 3 or tokens.shape[1] % 2 == 0:
        raise InputError(
            f"tokens must be [batch, 2*seq_len+1] ([BOS] + r + r), got shape {tuple(tokens.shape)}"
        )
    seq_len = (tokens.shape[1] - 1) // 2
    check_scan_shape(model, seq_len, tokens.shape[0])
    if not torch.equal(tokens[:, 1 : seq_len + 1], tokens[:, seq_len + 1 :]):
        raise InputError(
            "tokens are not repeated: positions 1..seq_len must equal positions "
            "seq_len+1..2*seq_len"
        )
    return seq_len


def pattern_scores(
    pattern: Float[Tensor, "batch n_heads query_pos key_pos"], seq_len: int
) -> dict[str, Float[Tensor, "batch n_heads"]]:
    """Per sequence and head: the mean attention each query pays to the key its head type predicts.

    - induction: queries in the second copy (positions seq_len+1 .. 2*seq_len) attending to the
      token right after the earlier copy of their own token (key = query - seq_len + 1). Exactly
      the seq_len queries where induction is possible are averaged, so a perfect induction head
      scores 1; ARENA's diagonal mean also counts two first-half queries and tops out at
      seq_len/(seq_len+2).
    - duplicate_token: the same queries attending to the earlier copy itself
      (key = query - seq_len).
    - previous_token: every query but BOS attending to key = query - 1.
    - current_token: every query but BOS attending to itself.
    - first_token: every query but BOS attending to position 0 (BOS), the usual resting place.
    """
    total = pattern.shape[-1]
    second_half = torch.arange(seq_len + 1, total, device=pattern.device)
    after_bos = torch.arange(1, total, device=pattern.device)

    def mean_attention(queries: Tensor, keys: Tensor) -> Tensor:
        return pattern[:, :, queries, keys].mean(-1)

    return {
        "induction": mean_attention(second_half, second_half - seq_len + 1),
        "previous_token": mean_attention(after_bos, after_bos - 1),
        "duplicate_token": mean_attention(second_half, second_half - seq_len),
        "current_token": mean_attention(after_bos, after_bos),
        "first_token": mean_attention(after_bos, torch.zeros_like(after_bos)),
    }


def tl_detection_patterns(
    tokens: Int[Tensor, "batch pos"],
) -> dict[str, Float[Tensor, "batch query_pos key_pos"]]:
    """TransformerLens head_detector's three detection patterns, for a whole batch at once."""
    total = tokens.shape[-1]
    previous = torch.zeros(total, total, device=tokens.device)
    previous[1:, :-1] = torch.eye(total - 1, device=tokens.device)
    duplicate = (tokens[:, :, None] == tokens[:, None, :]).float()
    duplicate = duplicate * (
        1 - torch.eye(total, device=tokens.device)
    )  # a token is not its own duplicate
    duplicate = duplicate.tril()
    induction = torch.zeros_like(duplicate)
    induction[:, :, 1:] = duplicate[:, :, :-1]  # one key to the right of each duplicate
    return {
        "previous_token": previous.expand(len(tokens), -1, -1),
        "duplicate_token": duplicate,
        "induction": induction.tril(),
    }


def tl_scores(
    pattern: Float[Tensor, "batch n_heads query_pos key_pos"], tokens: Int[Tensor, "batch pos"]
) -> dict[str, Float[Tensor, "batch n_heads"]]:
    """transformer_lens.head_detector's "mul" and "abs" scores (exclude_bos and
    exclude_current_token off, its defaults), per sequence. "mul": the share of attention on the
    detection pattern. "abs": 1 - sum|pattern - detection| / seq, rounded to 3 decimals per sequence
    as TransformerLens rounds it, so that averaged over sequences the two agree."""
    total = pattern.shape[-1]
    scores = {}
    for head_type, detection in tl_detection_patterns(tokens).items():
        on_pattern = einops.einsum(
            pattern,
            detection,
            "batch n_heads query_pos key_pos, batch query_pos key_pos -> batch n_heads",
        )
        scores[f"tl_{head_type}_mul"] = on_pattern / pattern.sum((-2, -1))
        # abs_diff.mean() * size, in float32 and in TransformerLens's order, then its rounding.
        difference = pattern - detection[:, None]
        error = (
            difference.abs_().mean((-2, -1)) * total
        )  # in place: one pattern-sized temporary, not two
        del difference
        scores[f"tl_{head_type}_abs"] = torch.tensor(
            [[1 - round(value, 3) for value in row] for row in error.tolist()], dtype=torch.float32
        )
    return scores


# The copying scores of models already scanned, with the weights they were computed from: they
# depend on the weights alone, so a second scan of the same model does not pay for them again.
_COPYING_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def weights_version(model: HookedTransformer) -> tuple:
    """Changes whenever any parameter is replaced or changed in place (torch counts in-place
    changes in `_version`)."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


def copying_scores(model: HookedTransformer) -> Float[Tensor, "layer n_heads"]:
    """Elhage et al. (2021)'s copying measure of each head's OV circuit W_E W_V W_O W_U: the
    eigenvalue sum over the sum of absolute values, sum(l) / sum(|l|), in [-1, 1]; near 1 when the
    head copies the tokens it attends to into its prediction.

    Computed by mechlab.analysis.circuits.copying_scores (the vocab x vocab circuit is never
    formed, the norms folded in as there, and no folded copy of W_E or W_U made), in float32
    whatever the model's dtype; kept per model until its weights change."""
    from mechlab.analysis.weights import copying_scores as circuit_copying
    from mechlab.analysis.weights import head_weights, unembed_embed

    version = weights_version(model)
    cached = _COPYING_CACHE.get(model)
    if cached is not None and cached[0] == version:
        return cached[1].clone()
    scores = circuit_copying(head_weights(model, vocabulary=False), unembed_embed(model))
    _COPYING_CACHE[model] = (version, scores)
    return scores.clone()


# moved to mechlab.analysis.tokens (the old paths still work)
__getattr__ = moved_names(__name__, {"LOSS_ROWS": "mechlab.analysis.tokens"})

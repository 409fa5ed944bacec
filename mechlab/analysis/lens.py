"""The logit lens (nostalgebraist, 2020): decode the residual stream before every layer, and after
the last, through the model's own final norm and unembedding, to see how the prediction forms.

The final norm is applied to each layer's residual afresh, so its scale is that residual's own.
Reusing the scale cached for the final layer (as ``cache.apply_ln_to_stack`` does by default) makes
early layers look uniform (TransformerLens issue 1076). Calling the model's ``ln_final`` and
``unembed`` modules keeps this right for LayerNorm and RMSNorm, with and without fold_ln.

Memory: only the residual streams are cached ([rows, pos, d_model]); logits are made for a chunk of
positions at a time and reduced to statistics at once, never [rows, pos, d_vocab] for a long prompt.
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.analysis.tokens import (
    PromptOrTokens,
    check_model,
    single_token,
    to_tokens,
    token_strings,
)
from mechlab.errors import InputError
from mechlab.memory import check_fits, forward_pattern_bytes

# Logits decoded at once, in floats: positions per chunk = CHUNK_ELEMENTS // (rows * d_vocab), and
# at least MIN_ROWS rows (small matmuls with a transposed operand take a slower path on some BLAS
# builds). 34 MB: 12 positions of GPT-2 small's 13 rows, in each of the two buffers (67 MB in all);
# the naive [13, 256, 50257] for 256 tokens is 670 MB. Twice this (25 positions) was no faster and
# raised the peak over a forward pass of 256 tokens from 5 MB to 102 MB (benchmarks/bench_lens.py).
CHUNK_ELEMENTS = 1 << 23
MIN_ROWS = 16
# And at most MAX_POSITIONS positions: the last chunk is padded to the full chunk (see
# positions_per_chunk), so a small vocabulary's thousands of positions per chunk would decode a
# short prompt hundreds of times over (random:tiny, 256 tokens: 6,553 positions for a 20-token
# prompt, 130 s for the test of 400 prompts instead of a few).
MAX_POSITIONS = 64


def positions_per_chunk(rows: int, d_vocab: int) -> int:
    """The positions decoded together: fixed for a model (its rows and vocabulary), never taken
    from the prompt. Chunk k always holds positions [k * n, (k + 1) * n), the last one padded with
    zero positions to the same shape, so every position is decoded by operations of one shape at
    one offset whatever the prompt's length: the lens of a prompt and of any prefix of it agree bit
    for bit at the prefix's positions, on every CPU, by construction (BLAS libraries pick kernels
    by a matmul's shape, and elementwise loops treat a tensor's last few elements apart)."""
    return min(MAX_POSITIONS, max(-(-MIN_ROWS // rows), CHUNK_ELEMENTS // (rows * d_vocab)))


@dataclass
class LensResult:
    """Per decoded row (a residual stream: ``layers``) and position: what the model would
    predict."""

    model: str
    prompt: str | None
    tokens: Int[Tensor, " pos"]
    token_strs: list[str]
    layers: list[str]  # row labels
    top_ids: Int[Tensor, "row pos k"]
    top_tokens: list  # [row][pos][k] strings
    top_probs: Float[Tensor, "row pos k"]
    next_token_prob: Float[Tensor, "row pos"]  # NaN at the last position (no next token)
    next_token_log_prob: Float[Tensor, "row pos"]
    next_token_rank: Int[Tensor, "row pos"]  # 0 = top-1; -1 at the last position
    kl_to_final: Float[Tensor, "row pos"]  # KL(final || row), nats
    entropy: Float[Tensor, "row pos"]  # nats
    target_token: str | None = None
    target_id: int | None = None
    target_prob: Float[Tensor, "row pos"] | None = None
    target_rank: Int[Tensor, "row pos"] | None = None
    # "tuned": every row but the output translated first (mechlab.analysis.tuned_lens)
    lens: str = "logit"

    def __repr__(self) -> str:
        rows, pos = self.kl_to_final.shape
        target = ""
        if self.target_id is not None:
            layer = self.first_top1_layer
            target = f", target {self.target_token!r} top-1 from " + (
                f"row {layer} ({self.layers[layer]})" if layer is not None else "no row"
            )
        return (
            f"LensResult({self.model}, {self.lens} lens: {rows} rows x {pos} positions of "
            f"{self.prompt!r}{target})"
        )

    def _repr_html_(self) -> str:
        from mechlab.present.lens import lens_summary_html

        return lens_summary_html(self)

    @property
    def first_top1_layer(self) -> int | None:
        """The first row from which the target is the top-1 token at the last position, through to
        the output; None when it is not top-1 at the output."""
        if self.target_rank is None:
            return None
        ranks = self.target_rank[:, -1].tolist()
        if ranks[-1] != 0:
            return None
        row = len(ranks) - 1
        while row > 0 and ranks[row - 1] == 0:
            row -= 1
        return row

    def to_json(self) -> dict:
        def table(tensor: Tensor, missing_last: bool = False) -> list:
            rows = tensor.tolist()
            if missing_last:  # the last position has no next token
                rows = [[*row[:-1], None] for row in rows]
            return rows

        target = None
        if self.target_prob is not None and self.target_rank is not None:
            target = {
                "token": self.target_token,
                "prob": self.target_prob.tolist(),
                "rank": self.target_rank.tolist(),
                "first_top1_layer": self.first_top1_layer,
            }
        return {
            "model": self.model,
            "lens": self.lens,
            "prompt": self.prompt,
            "tokens": self.token_strs,
            "layers": self.layers,
            "top_tokens": self.top_tokens,
            "top_probs": self.top_probs.tolist(),
            "next_token_prob": table(self.next_token_prob, True),
            "next_token_rank": table(self.next_token_rank, True),
            "kl_to_final": self.kl_to_final.tolist(),
            "entropy": self.entropy.tolist(),
            "target": target,
        }


def residual_hooks(n_layers: int, include_mid: bool) -> list[tuple[str, str]]:
    """(hook name, row label) for each decoded residual stream, from the embedding to the output."""
    rows = []
    for layer in range(n_layers):
        rows.append(
            (f"blocks.{layer}.hook_resid_pre", "embed" if layer == 0 else f"after L{layer - 1}")
        )
        if include_mid:
            rows.append((f"blocks.{layer}.hook_resid_mid", f"L{layer} mid"))
    rows.append((f"blocks.{n_layers - 1}.hook_resid_post", f"after L{n_layers - 1} (output)"))
    return rows


def resolve_target(model: HookedTransformer, target: str | int) -> int:
    """A target given as text must be exactly one token; as an int, a valid token id."""
    return single_token(model, target, "target", "--target ' Paris'")


def logit_lens(
    model: HookedTransformer,
    prompt_or_tokens: PromptOrTokens,
    *,
    target: str | int | None = None,
    top_k: int = 5,
    include_mid: bool = False,
    lens=None,
) -> LensResult:
    """Decode every layer's residual stream (see the module docstring) for one prompt; with `lens`
    (a `mechlab.analysis.tuned_lens.TunedLens` for this model), translate each layer's input first:
    the tuned lens.

    A position's results are the same bit for bit whatever follows it in the prompt (see
    positions_per_chunk).
    """
    check_model(model)
    if not isinstance(top_k, int) or not 1 <= top_k <= model.cfg.d_vocab:
        raise InputError(f"top_k must be between 1 and {model.cfg.d_vocab}, got {top_k!r}")
    tokens = to_tokens(model, prompt_or_tokens)
    if tokens.shape[0] != 1:
        raise InputError(f"logit_lens takes one sequence, got a batch of {tokens.shape[0]}")
    target_id = resolve_target(model, target) if target is not None else None
    check_lens_fits(model, tokens.shape[-1], include_mid)
    residuals, labels = cached_residuals(model, tokens, include_mid)
    with torch.inference_mode():
        if lens is not None:
            residuals = lens.translate_rows(residuals)
        stats = decode_residuals(model, residuals, tokens[0], top_k=top_k, target_id=target_id)
    ids = tokens[0].cpu()
    vocabulary = {
        i: s
        for i, s in zip(
            stats["top_ids"].unique().tolist(),
            token_strings(model, stats["top_ids"].unique()),
            strict=True,
        )
    }
    top_tokens = [
        [[vocabulary[i] for i in position] for position in row] for row in stats["top_ids"].tolist()
    ]
    return LensResult(
        model=model.cfg.model_name,
        prompt=prompt_or_tokens if isinstance(prompt_or_tokens, str) else None,
        tokens=ids,
        token_strs=token_strings(model, ids),
        layers=labels,
        top_ids=stats["top_ids"],
        top_tokens=top_tokens,
        top_probs=stats["top_probs"],
        next_token_prob=stats["next_log_prob"].exp(),
        next_token_log_prob=stats["next_log_prob"],
        next_token_rank=stats["next_rank"],
        kl_to_final=stats["kl"],
        entropy=stats["entropy"],
        target_token=token_strings(model, [target_id])[0] if target_id is not None else None,
        target_id=target_id,
        target_prob=stats.get("target_prob"),
        target_rank=stats.get("target_rank"),
        lens="logit" if lens is None else "tuned",
    )


def check_lens_fits(model: HookedTransformer, pos: int, include_mid: bool) -> None:
    """Refuse, before the forward pass, a prompt whose lens cannot fit in the memory available.

    The peak is the forward pass's largest attention (scores, pattern and a temporary of
    n_heads x pos^2), the cached residual streams (rows x pos x d_model) and the two decoding
    buffers (a chunk of positions' float32 logits each, see positions_per_chunk), plus a float32
    copy of the unembedding for a half-precision model."""
    cfg = model.cfg
    rows = cfg.n_layers * (2 if include_mid else 1) + 1
    needed = forward_pattern_bytes(model, pos) + rows * pos * cfg.d_model * cfg.dtype.itemsize
    needed += 2 * 4 * rows * positions_per_chunk(rows, cfg.d_vocab_out) * cfg.d_vocab_out
    if cfg.dtype != torch.float32:
        needed += 4 * cfg.d_model * cfg.d_vocab_out
    check_fits(needed, what=f"the lens over {pos} tokens", fix="use a shorter prompt.")


def decoded_logits(
    model: HookedTransformer, prompt_or_tokens: PromptOrTokens, *, include_mid: bool = False
) -> Float[Tensor, "row pos d_vocab"]:
    """Every row's logits at once, [rows, pos, d_vocab]: the plain, unchunked lens. For short
    prompts, tests and notebooks; logit_lens computes the same statistics in bounded memory."""
    residuals, _ = cached_residuals(model, to_tokens(model, prompt_or_tokens)[:1], include_mid)
    with torch.inference_mode():
        return model.unembed(model.ln_final(residuals))


def cached_residuals(
    model: HookedTransformer, tokens: Int[Tensor, "batch pos"], include_mid: bool
) -> tuple[Float[Tensor, "row pos d_model"], list[str]]:
    """The first sequence's residual streams that the lens decodes, and their row labels; nothing
    else is cached, and the pass stops after the blocks (every row, the output's too, is decoded
    by the caller)."""
    hooks = residual_hooks(model.cfg.n_layers, include_mid)
    wanted = {name for name, _ in hooks}
    with torch.inference_mode():
        _, cache = model.run_with_cache(
            tokens, names_filter=lambda name: name in wanted, stop_at_layer=model.cfg.n_layers
        )
        return torch.stack([cache[name][0] for name, _ in hooks]), [label for _, label in hooks]


def decode_residuals(
    model: HookedTransformer,
    residuals: Float[Tensor, "row pos d_model"],
    tokens: Int[Tensor, " pos"],
    *,
    top_k: int,
    target_id: int | None,
) -> dict[str, Tensor]:
    """Statistics of each row's decoded distribution, a chunk of positions at a time (see
    positions_per_chunk)."""
    rows, pos, _ = residuals.shape
    d_vocab = model.cfg.d_vocab_out
    chunk_size = positions_per_chunk(rows, d_vocab)
    # Two chunk-sized buffers, reused: writing into memory already mapped is several times faster
    # than a fresh tensor per operation (each would be page-faulted in anew).
    # Decoding and its statistics are computed in float32 whatever the model's dtype: bfloat16
    # logits (8 bits of mantissa) would tie the top tokens. A half-precision model's unembedding
    # is copied to float32 once per call (113 MB for SmolLM2, 671 MB for Gemma 3).
    # A zero bias (GPT-2's, Llama's) is left out: addmm would first copy it into every row.
    unembed = (model.W_U.float(), model.b_U.float() if model.b_U.any() else None)
    size = rows * chunk_size * d_vocab
    logits_buffer = residuals.new_empty(size, dtype=torch.float32)
    scratch_buffer = residuals.new_empty(size, dtype=torch.float32)
    # The token each position should predict; the last position has none (-1, masked below).
    next_tokens = torch.cat([tokens[1:], tokens.new_full((1,), -1)])
    parts = []
    for start in range(0, pos, chunk_size):
        chunk = residuals[:, start : start + chunk_size]
        chunk_next = next_tokens[start : start + chunk_size]
        padding = chunk_size - chunk.shape[1]  # the last chunk: zero positions, decoded and dropped
        if padding:
            chunk = torch.cat([chunk, chunk.new_zeros(rows, padding, chunk.shape[-1])], dim=1)
            chunk_next = torch.cat([chunk_next, chunk_next.new_full((padding,), -1)])
        parts.append(
            decode_chunk(
                model,
                unembed,
                chunk.contiguous(),  # one shape and layout for every chunk
                chunk_next,
                top_k,
                target_id,
                logits_buffer,
                scratch_buffer,
            )
        )
    return {name: torch.cat([part[name] for part in parts], dim=1)[:, :pos] for name in parts[0]}


def decode_chunk(
    model,
    unembed: tuple[Float[Tensor, "d_model d_vocab"], Float[Tensor, " d_vocab"] | None],
    residuals: Float[Tensor, "row chunk d_model"],
    next_tokens: Int[Tensor, " chunk"],
    top_k: int,
    target_id: int | None,
    logits_buffer: Float[Tensor, " size"],
    scratch_buffer: Float[Tensor, " size"],
) -> dict[str, Tensor]:
    """Decode [row, chunk, d_model] residuals and keep only per-position statistics, using the two
    reused buffers.

    Each pass over the logits is a read of 34 MB, so they are counted: the matmul writes them, one
    pass finds each block's maximum (for the top-k and the softmax's shift), and the logits are
    shifted in place; then exp, its sum, the entropy's product and sum, the KL's difference,
    product and sum, and one comparison and sum per rank. The log-probabilities themselves are never
    written: every statistic is taken on the shifted logits and the row's log Z subtracted after.
    """
    rows, chunk, d_model = residuals.shape
    normalized = model.ln_final(residuals).reshape(rows * chunk, d_model)
    # x @ W_U + b_U directly, into the reused buffer (the Unembed module would allocate anew)
    W_U, b_U = unembed
    normalized = normalized.float()
    out = logits_buffer.view(len(normalized), -1)
    if b_U is None:
        logits = torch.mm(normalized, W_U, out=out)
    else:
        logits = torch.addmm(b_U, normalized, W_U, out=out)
    top_logits, top_ids, row_max = block_top_k(logits, top_k)
    logits = logits.view(rows, chunk, -1)
    scratch = scratch_buffer[: logits.numel()].view(rows, chunk, -1)
    row_max = row_max.view(rows, chunk, 1)
    shifted = logits.sub_(row_max)  # in place, for a stable exp
    exp = torch.exp(shifted, out=scratch)
    sum_exp = exp.sum(-1)
    log_z = sum_exp.log()  # log p = shifted - log Z
    # Entropy H = log Z - sum(e * shifted) / Z, reusing the exp of the softmax.
    entropy = log_z - exp.mul_(shifted).sum(-1) / sum_exp
    probs_final = (shifted[-1] - log_z[-1, :, None]).exp()
    # KL(final || row) = sum p_final (log p_final - log p_row)
    #                  = sum p_final (shifted_final - shifted_row) - (log Z_final - log Z_row),
    # the first sum taken term by term: as -H_final - sum p_final log p_row it would lose small KLs
    # to cancellation.
    differences = torch.sub(shifted[-1], shifted, out=scratch).mul_(probs_final).sum(-1)
    kl = (differences - (log_z[-1] - log_z)).clamp_min(0)
    kl[-1] = 0.0  # the output row against itself: exactly zero, not a rounding error
    top_log_probs = (top_logits.view(rows, chunk, -1) - row_max) - log_z[..., None]
    safe_next = next_tokens.clamp_min(0)
    next_shifted = shifted.gather(-1, safe_next.expand(rows, -1)[..., None])[..., 0]
    has_next = next_tokens >= 0
    stats = {
        "top_ids": top_ids.view(rows, chunk, -1),
        "top_probs": top_log_probs.exp(),
        "entropy": entropy,
        "kl": kl,
        "next_log_prob": (next_shifted - log_z).masked_fill(~has_next, math.nan),
        "next_rank": count_above(shifted, next_shifted, scratch).masked_fill(~has_next, -1),
    }
    if target_id is not None:
        target_shifted = shifted[..., target_id]
        stats["target_prob"] = (target_shifted - log_z).exp()
        stats["target_rank"] = count_above(shifted, target_shifted, scratch)
    return stats


def count_above(
    scores: Float[Tensor, "row chunk d_vocab"],
    threshold: Float[Tensor, "row chunk"],
    scratch: Float[Tensor, "row chunk d_vocab"],
) -> Int[Tensor, "row chunk"]:
    """How many tokens score above the threshold: the rank (0 = top-1). Counted in float32 (exact
    below 2**24), since summing a bool tensor first converts all of it to int64."""
    return torch.gt(scores, threshold[..., None], out=scratch).sum(-1).long()


# Columns per block in block_top_k: a block's maximum is one pass, then only k blocks are searched.
BLOCK = 64


def block_top_k(
    scores: Float[Tensor, "n d_vocab"], k: int
) -> tuple[Float[Tensor, "n k"], Int[Tensor, "n k"], Float[Tensor, " n"]]:
    """Each row's k largest scores, their columns and the row's maximum, in one pass over the
    scores and a search of k blocks of BLOCK columns (torch.topk over 50,257 columns costs several
    passes).

    Exact: if a top-k score lay in a block not searched, each of the k searched blocks would hold a
    score at least as large, so the searched scores hold the same k largest values. Only which of
    several equal scores is returned may differ from torch.topk (which promises no order either).
    """
    n, vocab = scores.shape
    n_blocks = vocab // BLOCK
    if k * BLOCK * 4 > vocab:  # too few blocks to gain from them
        values, ids = scores.topk(k, dim=-1)
        return values, ids, scores.amax(-1)
    body = scores[:, : n_blocks * BLOCK].unflatten(1, (n_blocks, BLOCK))
    block_max = body.amax(-1)
    tail = torch.arange(n_blocks * BLOCK, vocab, device=scores.device)
    row_max = block_max.amax(-1)
    if len(tail):
        row_max = torch.maximum(row_max, scores[:, tail].amax(-1))
    blocks = block_max.topk(k, dim=-1).indices.sort(-1).values
    columns = blocks[..., None] * BLOCK + torch.arange(BLOCK, device=scores.device)
    columns = torch.cat([columns.flatten(1), tail.expand(n, -1)], dim=1)
    values, chosen = scores.gather(1, columns).topk(k, dim=-1)
    return values, columns.gather(1, chosen), row_max


@dataclass
class LensCurves:
    """Per-row averages over many prompts and all their positions."""

    layers: list[str]
    n_prompts: int
    kl_to_final: Float[Tensor, " row"]
    mean_log_rank: Float[Tensor, " row"]  # mean of ln(1 + rank of the actual next token)
    top1_agreement: Float[
        Tensor, " row"
    ]  # share of positions whose top-1 equals the output's top-1

    def to_json(self) -> dict:
        return {
            "layers": self.layers,
            "n_prompts": self.n_prompts,
            "kl_to_final": self.kl_to_final.tolist(),
            "mean_log_rank": self.mean_log_rank.tolist(),
            "top1_agreement": self.top1_agreement.tolist(),
        }


def lens_curves(results: Iterable[LensResult]) -> LensCurves:
    """Average the per-row statistics of several prompts over all positions. `results` may be a
    generator: only running sums are kept, so memory stays flat however many prompts there are."""
    n_prompts, layers = 0, cast(list[str], [])
    kl_sum = log_rank_sum = agreement_sum = torch.zeros(0, dtype=torch.float64)
    positions = ranked_positions = 0
    for result in results:
        n_prompts += 1
        layers = layers or result.layers
        kl = result.kl_to_final.double().sum(1)
        log_rank = result.next_token_rank[:, :-1].double().log1p().sum(1)
        agreement = (result.top_ids[:, :, 0] == result.top_ids[-1:, :, 0]).double().sum(1)
        if n_prompts == 1:
            kl_sum, log_rank_sum, agreement_sum = kl, log_rank, agreement
        else:
            kl_sum += kl
            log_rank_sum += log_rank
            agreement_sum += agreement
        positions += result.kl_to_final.shape[1]
        ranked_positions += result.kl_to_final.shape[1] - 1
    if n_prompts == 0:
        raise InputError("no prompts to average over")
    return LensCurves(
        layers=layers,
        n_prompts=n_prompts,
        kl_to_final=(kl_sum / positions).float(),
        mean_log_rank=(log_rank_sum / max(ranked_positions, 1)).float(),
        top1_agreement=(agreement_sum / positions).float(),
    )


def logit_lens_over(
    model: HookedTransformer,
    prompts: list[str],
    *,
    progress: bool = False,
    announce: Callable[[str], None] | None = None,
    **options,
) -> tuple[LensResult, LensCurves]:
    """The lens of the first prompt, and the per-layer curves over every prompt (lens_curves),
    the prompts run one at a time so that memory stays flat. `announce` is told how long the
    whole run will take, estimated from the first prompt; `options` go to logit_lens."""
    import time

    from mechlab.progress import progress_bar

    start = time.perf_counter()
    first = logit_lens(model, prompts[0], **options)
    if announce is not None:
        seconds = time.perf_counter() - start
        announce(
            f"{len(prompts):,} prompts; the first took {seconds:.2f} s, so about "
            f"{seconds * len(prompts) / 60:.1f} min in all (Ctrl-C stops without writing)"
        )

    def results():  # one at a time: only the curves' running sums are kept
        yield first
        rest = progress_bar(prompts[1:], desc="logit lens", leave=False, disable=not progress)
        for prompt in rest:
            yield logit_lens(model, prompt, **options)

    return first, lens_curves(results())

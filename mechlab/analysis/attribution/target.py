"""The target of token attribution as a function of the prompt's token embeddings, the baselines
that replace them, and gradients of the target with respect to them (and to any hooked activation),
batched in chunks sized from the memory available."""

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.analysis.tokens import (
    single_token,
)
from mechlab.errors import InputError
from mechlab.memory import available_bytes, check_fits

MEMORY_SHARE = 0.25  # of the memory available, what one batch of the model may take


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

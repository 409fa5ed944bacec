"""Direct logit attribution: how much each component writes the answer straight into the logits.

The final residual stream at the last position is a sum of what every component wrote:
``embed (+ pos_embed) + sum over layers of (sum over heads of z_h W_O[h] + b_O + mlp_out)``.
The logit (or logit difference) is that sum through the final norm and the unembedding. The norm is
not linear, but with its scale *frozen at the value the final layer's residual stream actually had*
(``ln_final.hook_scale``) it is: centring (LayerNorm) and dividing by a fixed scale distribute over
the sum. So each component's contribution is its own output, centred if the norm centres, divided by
that scale, times the norm's weight, dotted with ``W_U[:, answer] (- W_U[:, wrong])``. The norm's
bias and the unembedding bias are one more term, ``unembed_bias``. The terms add up exactly to the
model's own logit (difference): a check that nothing was left out.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.tokens import PromptOrTokens, single_token, to_tokens, token_strings


@dataclass
class AttributionResult:
    """Each component's direct contribution to the answer's logit (or to the logit difference
    answer - wrong) at the last position. Each is computed from that component's own activations,
    and they add up to `total`, the model's own value."""

    model: str
    prompt: str
    answer: str
    wrong: str | None
    embed: float  # token (and positional) embeddings
    heads: Float[Tensor, "layer n_heads"]  # each head's z @ W_O, per query head
    attn_bias: Float[Tensor, " layer"]  # each attention layer's output bias b_O
    mlps: Float[Tensor, " layer"]
    unembed_bias: float  # b_U, plus the final norm's bias through W_U if it has one
    total: float  # the model's own logit (difference) at the last position

    @property
    def what(self) -> str:
        return f"logit({self.answer!r})" + (
            f" - logit({self.wrong!r})" if self.wrong is not None else ""
        )

    @property
    def sum_of_parts(self) -> float:
        return (
            self.embed
            + self.heads.double().sum().item()
            + self.attn_bias.double().sum().item()
            + self.mlps.double().sum().item()
            + self.unembed_bias
        )

    def top_heads(self, k: int = 5) -> list[tuple[int, int, float]]:
        """The k heads with the largest |contribution| as (layer, head, contribution)."""
        n_heads = self.heads.shape[1]
        order = self.heads.flatten().abs().argsort(descending=True)[:k].tolist()
        return [(i // n_heads, i % n_heads, self.heads.flatten()[i].item()) for i in order]

    def __repr__(self) -> str:
        layer, head, value = self.top_heads(1)[0]
        return (
            f"AttributionResult({self.model}: {self.what} = {self.total:.3f} at the last "
            f"position; largest head L{layer}H{head} {value:+.3f}, MLPs {self.mlps.sum():+.3f}, "
            f"embed {self.embed:+.3f})"
        )

    def _repr_html_(self) -> str:
        from mechlab.views import dla_html

        return dla_html(self)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "answer": self.answer,
            "wrong": self.wrong,
            "embed": self.embed,
            "heads": self.heads.tolist(),
            "attn_bias": self.attn_bias.tolist(),
            "mlps": self.mlps.tolist(),
            "unembed_bias": self.unembed_bias,
            "total": self.total,
            "sum_of_parts": self.sum_of_parts,
            "top_heads": [list(head) for head in self.top_heads(10)],
        }


def logit_attribution(
    model: HookedTransformer,
    prompt: PromptOrTokens,
    *,
    answer: str | int,
    wrong: str | int | None = None,
) -> AttributionResult:
    """Direct logit attribution of `answer`'s logit (or of ``logit(answer) - logit(wrong)``) at
    the last position of `prompt`, to the embeddings, every head (per query head), every attention
    output bias, every MLP and the unembedding bias, through the final norm with its scale frozen
    at the final residual stream's own (see the module docstring)."""
    tokens = to_tokens(model, prompt)[:1]
    answer_id = single_token(model, answer, "answer", "--answer ' Paris'")
    wrong_id = None
    if wrong is not None:
        wrong_id = single_token(model, wrong, "wrong answer", "--wrong ' London'")
    cfg = model.cfg
    names = {"hook_embed", "hook_pos_embed", "ln_final.hook_scale"}
    for layer in range(cfg.n_layers):
        names |= {f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_mlp_out"}
    zero = torch.zeros((), dtype=torch.float64)
    with torch.inference_mode():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
        direction = model.W_U[:, answer_id].double()
        total = logits[0, -1, answer_id].double()
        bias = model.b_U[answer_id].double()
        if wrong_id is not None:
            direction = direction - model.W_U[:, wrong_id].double()
            total = total - logits[0, -1, wrong_id].double()
            bias = bias - model.b_U[wrong_id].double()
        norm = cfg.normalization_type
        if norm is not None:
            ln = model.ln_final
            if getattr(ln, "b", None) is not None:
                bias = bias + ln.b.double() @ direction
            if getattr(ln, "w", None) is not None:
                direction = direction * ln.w.double()
            scale = cache["ln_final.hook_scale"][0, -1].double()  # [1]

        def through_final(written: Tensor) -> Tensor:
            """What `written` (last position, [..., d_model]) adds to the logit (difference)."""
            written = written.double()
            if norm in ("LN", "LNPre"):
                written = written - written.mean(-1, keepdim=True)
            if norm is not None:
                written = written / scale
            return written @ direction

        embed = cache["hook_embed"][0, -1]
        if "hook_pos_embed" in cache:
            embed = embed + cache["hook_pos_embed"][0, -1]
        heads, attn_bias, mlps = [], [], []
        for layer, block in enumerate(model.blocks):
            z = cache[f"blocks.{layer}.attn.hook_z"][0, -1]  # [n_heads, d_head]
            per_head = torch.einsum("hd,hdm->hm", z.double(), block.attn.W_O.double())
            heads.append(through_final(per_head))
            attn_bias.append(through_final(block.attn.b_O))
            mlp_out = f"blocks.{layer}.hook_mlp_out"  # absent in attention-only models
            mlps.append(through_final(cache[mlp_out][0, -1]) if mlp_out in cache else zero)
    return AttributionResult(
        model=cfg.model_name,
        prompt=prompt if isinstance(prompt, str) else "".join(token_strings(model, tokens[0])),
        answer=token_strings(model, [answer_id])[0],
        wrong=None if wrong_id is None else token_strings(model, [wrong_id])[0],
        embed=through_final(embed).item(),
        heads=torch.stack(heads).float(),
        attn_bias=torch.stack(attn_bias).float(),
        mlps=torch.stack(mlps).float(),
        unembed_bias=bias.item(),
        total=total.item(),
    )

"""Direct logit attribution: how much each component writes the answer straight into the logits.

The final residual stream at the last position is a sum of what every component wrote:
``embed (+ pos_embed) + sum over layers of (sum over heads of z_h W_O[h] + b_O + mlp_out)``.
The logit (or logit difference) is that sum through the final norm and the unembedding. The norm is
not linear, but with its scale *frozen at the value the final layer's residual stream actually had*
(``ln_final.hook_scale``) it is: centring (LayerNorm) and dividing by a fixed scale distribute over
the sum. So each component's contribution is its own output, centred if the norm centres, divided by
that scale, times the norm's weight, dotted with ``W_U[:, answer] (- W_U[:, wrong])``. The norm's
bias and the unembedding bias are one more term, ``unembed_bias``.

Models with a norm *after* each sublayer as well (Gemma 2 and 3: ``ln1_post``, ``ln2_post``) pass
each sublayer's output through that norm before it joins the residual stream. The MLP's post-norm
is inside ``hook_mlp_out`` already; the attention's is not inside ``z W_O + b_O``, so each head's
output and the bias go through ``ln1_post`` with its scale frozen at the value it had in the run,
the same way as the final norm: the heads' shares of the norm's output then add up to it, and its
weight and bias are included (the bias in ``attn_bias``). Post-norm models (OLMo 2) are handled the
same way with their ``ln1``.

The terms add up to the model's own logit (difference), up to the rounding of the model's dtype:
`logit_attribution` checks that before returning, so nothing left out goes unnoticed.
"""

from dataclasses import dataclass
from typing import cast

import einops
import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens import HookedTransformer

from mechlab.analysis.tokens import (
    PromptOrTokens,
    answer_ids,
    check_model,
    one_prompt,
    token_strings,
)
from mechlab.analysis.weights import attention_output_norms
from mechlab.errors import DataError
from mechlab.labels import head_label

# How far the parts may differ from the model's own total (DirectParts.tolerance): the logits'
# rounding, ADD_UP_ULPS of the dtype's epsilon on the spread of what was summed, and ADD_UP_ATOL.
# Measured on SmolLM2 and Gemma 3 (five prompts each, with and without a wrong answer, float32 and
# bfloat16), the largest gap was a third of this tolerance; the decomposition that left out
# Gemma's post-attention norm was 5.4 logits off.
ADD_UP_ATOL = 1e-4
ADD_UP_ULPS = 8


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
    # how far the parts may honestly differ from the total in the model's dtype (checked before the
    # result is returned: DirectParts.tolerance), and that dtype
    tolerance: float = 0.0
    dtype: str = "float32"

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
            f"position; largest head {head_label(layer, head)} {value:+.3f}, "
            f"MLPs {self.mlps.sum():+.3f}, embed {self.embed:+.3f})"
        )

    def _repr_html_(self) -> str:
        from mechlab.present.dla import dla_html

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
            "tolerance": self.tolerance,
            "dtype": self.dtype,
            "top_heads": [list(head) for head in self.top_heads(10)],
        }


@dataclass
class FrozenNorm:
    """A LayerNorm or RMSNorm with its scale frozen at the value it had in one run. Then it is
    affine: ``linear`` (centre if LayerNorm, divide by the scale, times the weight) distributes over
    a sum of inputs, and ``offset`` (its bias) is added once."""

    centre: bool
    scale: Tensor  # [1], float64
    weight: Tensor | None  # [d_model], float64
    bias: Tensor | None

    @classmethod
    def of(cls, norm: nn.Module, scale: Float[Tensor, " 1"]) -> "FrozenNorm":
        from transformer_lens.components import LayerNorm, LayerNormPre

        def double(name: str) -> Tensor | None:
            value = getattr(norm, name, None)
            return None if value is None else value.double()

        return cls(
            centre=isinstance(norm, (LayerNorm, LayerNormPre)),
            scale=scale.double(),
            weight=double("w"),
            bias=double("b"),
        )

    def linear(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        if self.centre:
            x = x - x.mean(-1, keepdim=True)
        x = x / self.scale
        return x if self.weight is None else x * self.weight

    def offset(self) -> Float[Tensor, " d_model"] | float:
        return 0.0 if self.bias is None else self.bias

    def bias_through(self, direction: Float[Tensor, " d_model"]) -> Float[Tensor, ""]:
        return torch.zeros((), dtype=torch.float64) if self.bias is None else self.bias @ direction


class DirectParts:
    """Takes what each component wrote into the last position's residual stream to its direct
    effect on the logit (difference): through the frozen final norm, dotted with the direction.
    Keeps the running sum in float64, and the sum of squares of every elementwise product summed,
    from which rounding in the model's dtype can be sized (see `tolerance`)."""

    def __init__(self, final: FrozenNorm, direction: Float[Tensor, " d_model"]):
        self.final, self.direction = final, direction
        self.zero = torch.zeros((), dtype=torch.float64)
        self.total = self.zero.clone()
        self.squares = self.zero.clone()

    def add(self, written: Float[Tensor, "*part d_model"]) -> Float[Tensor, "*part"]:
        through = self.final.linear(written.double())
        self.squares += ((through * self.direction) ** 2).sum()
        part = through @ self.direction
        self.total += part.sum()
        return part

    def tolerance(self, dtype: torch.dtype, logits: float) -> float:
        """How far the parts may honestly differ from the model's total, in its dtype: half an ulp
        of each logit (`logits`: the sum of their magnitudes), ADD_UP_ULPS of rounding on every
        element summed (their root sum of squares, the errors being independent), and a floor."""
        spread = logits / 2 + ADD_UP_ULPS * self.squares.sqrt().item()
        return ADD_UP_ATOL + torch.finfo(dtype).eps * spread


def check_adds_up(result: AttributionResult, tolerance: float) -> None:
    """Raise DataError when the parts do not add up to the model's own total."""
    gap = result.sum_of_parts - result.total
    if not abs(gap) <= tolerance:
        raise DataError(
            f"direct logit attribution does not add up on {result.model}: the parts sum to "
            f"{result.sum_of_parts:.4f} but the model's {result.what} is {result.total:.4f} "
            f"(gap {gap:+.4f}, tolerance {tolerance:.2g}); a component's output reaches the "
            "residual stream through something the decomposition does not model: please report it"
        )


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
    at the final residual stream's own, and through each block's post-attention norm (Gemma's
    ``ln1_post``) with its scale frozen likewise (see the module docstring).

    The parts are accumulated in float64 and checked against the model's own logit (difference)
    before the result is returned: a gap beyond the rounding of the model's dtype raises DataError
    naming it, so a decomposition that leaves something out is never returned silently.
    """
    check_model(model)
    tokens = one_prompt(model, prompt, "direct logit attribution")
    answer_id, wrong_id = answer_ids(model, answer, wrong)
    cfg = model.cfg
    post_norms = {layer: attention_output_norms(model, layer) for layer in range(cfg.n_layers)}
    names = {"hook_embed", "hook_pos_embed", "ln_final.hook_scale"}
    for layer in range(cfg.n_layers):
        names |= {f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_mlp_out"}
        names |= {f"{norm}.hook_scale" for norm in post_norms[layer]}
    with torch.inference_mode():
        output, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
        logits = cast(Tensor, output)
        direction = model.W_U[:, answer_id].double()
        total = logits[0, -1, answer_id].double()
        magnitude = total.abs().item()
        bias = model.b_U[answer_id].double()
        if wrong_id is not None:
            direction = direction - model.W_U[:, wrong_id].double()
            total = total - logits[0, -1, wrong_id].double()
            magnitude += logits[0, -1, wrong_id].abs().item()
            bias = bias - model.b_U[wrong_id].double()
        if cfg.normalization_type is None:  # no final norm: the identity
            final = FrozenNorm(
                centre=False, scale=torch.ones(1, dtype=torch.float64), weight=None, bias=None
            )
        else:
            final = FrozenNorm.of(model.ln_final, cache["ln_final.hook_scale"][0, -1])
        bias = bias + final.bias_through(direction)
        parts = DirectParts(final, direction)

        embed = cache["hook_embed"][0, -1]
        if "hook_pos_embed" in cache:
            embed = embed + cache["hook_pos_embed"][0, -1]
        embed_part = parts.add(embed)
        heads, attn_bias, mlps = [], [], []
        for layer, block in enumerate(model.blocks):
            z = cache[f"blocks.{layer}.attn.hook_z"][0, -1]
            per_head = einops.einsum(
                z.double(),
                block.attn.W_O.double(),
                "n_heads d_head, n_heads d_head d_model -> n_heads d_model",
            )
            layer_bias = block.attn.b_O.double()
            for name in post_norms[layer]:  # each with its scale frozen at this run's
                norm = FrozenNorm.of(model.get_submodule(name), cache[f"{name}.hook_scale"][0, -1])
                per_head = norm.linear(per_head)
                layer_bias = norm.linear(layer_bias) + norm.offset()
            heads.append(parts.add(per_head))
            attn_bias.append(parts.add(layer_bias))
            mlp_out = f"blocks.{layer}.hook_mlp_out"  # absent in attention-only models
            mlps.append(parts.add(cache[mlp_out][0, -1]) if mlp_out in cache else parts.zero)
    result = AttributionResult(
        model=cfg.model_name,
        prompt=prompt if isinstance(prompt, str) else "".join(token_strings(model, tokens[0])),
        answer=token_strings(model, [answer_id])[0],
        wrong=None if wrong_id is None else token_strings(model, [wrong_id])[0],
        embed=embed_part.item(),
        heads=torch.stack(heads).float(),
        attn_bias=torch.stack(attn_bias).float(),
        mlps=torch.stack(mlps).float(),
        unembed_bias=bias.item(),
        total=total.item(),
        tolerance=parts.tolerance(cfg.dtype, magnitude),
        dtype=str(cfg.dtype).removeprefix("torch."),
    )
    check_adds_up(result, tolerance=result.tolerance)
    return result

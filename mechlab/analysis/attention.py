"""Attention patterns: computing them for the heads selected (mechlab.analysis.tokens checks the
layer and head indices). mechlab.present.attention draws them (a view and a figure)."""

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.analysis.tokens import (
    PromptOrTokens,
    check_head,
    check_heads,
    check_layer,
    to_tokens,
    token_strings,
)
from mechlab.labels import heads_label
from mechlab.memory import check_fits, forward_pattern_bytes


@dataclass
class HeadPatterns:
    """Some heads' attention patterns on one sequence: what an attention view or figure draws."""

    model: str  # the model's name
    heads: list[tuple[int, int]]  # (layer, head), in the order drawn
    tokens: list[str]  # the tokens drawn (the last `len(tokens)` of `n_tokens`)
    pattern: Float[Tensor, "head query_pos key_pos"]  # float32, each row sums to one
    n_tokens: int  # the sequence's length; more than len(tokens) when only the last were kept

    def __repr__(self) -> str:
        return (
            f"HeadPatterns({self.model}: {heads_label(self.heads)} on {len(self.tokens)} of "
            f"{self.n_tokens} tokens)"
        )


def layer_heads(model: HookedTransformer, layer: int, heads: list[int] | None) -> list:
    """(layer, head) pairs of one layer: its heads in `heads` (checked), or all of them."""
    check_layer(model, layer)
    return [(layer, head) for head in (range(model.cfg.n_heads) if heads is None else heads)]


def select_heads(
    model: HookedTransformer, *, layers: list[int], heads: list[tuple[int, int]]
) -> list[list[tuple[int, int]]]:
    """The heads `mechlab attention` draws, one list per layer in layer order: every head of each
    of `layers`, and each of `heads` (layer, head); every head of every layer when both are empty.
    """
    if not layers and not heads:
        layers = list(range(model.cfg.n_layers))
    selected = {layer: layer_heads(model, layer, None) for layer in layers}
    for layer, head in heads:
        check_layer(model, layer)
        check_head(model, layer, head)
        if (layer, head) not in selected.setdefault(layer, []):
            selected[layer].append((layer, head))
    return [selected[layer] for layer in sorted(selected)]


def head_patterns(
    model: HookedTransformer,
    prompt_or_tokens: PromptOrTokens,
    heads: list[tuple[int, int]],
    *,
    last: int | None = None,
) -> HeadPatterns:
    """The attention patterns of any (layer, head) pairs on the first sequence, from one forward
    pass; with `last`, only the last `last` queries and keys are kept (see attention_patterns)."""
    check_heads(model, heads)
    tokens = to_tokens(model, prompt_or_tokens)[:1]
    patterns = attention_patterns(model, tokens, sorted({layer for layer, _ in heads}), last=last)
    strings = token_strings(model, tokens[0])
    return HeadPatterns(
        model=model.cfg.model_name,
        heads=[(layer, head) for layer, head in heads],
        tokens=strings[-last:] if last else strings,
        pattern=torch.stack([patterns[layer][head] for layer, head in heads]),
        n_tokens=len(strings),
    )


def attention_patterns(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    layers: list[int],
    *,
    last: int | None = None,
) -> dict[int, Float[Tensor, "n_heads query_pos key_pos"]]:
    """The first sequence's attention patterns at the given layers (float32, on the CPU).

    Each layer's pattern is cut down as soon as it is produced, by a hook, and nothing else is
    kept: with `last`, only the last `last` queries and keys, so a view of a long prompt holds
    n_heads x last^2 numbers per layer, not n_heads x pos^2 (the forward pass itself holds one
    layer's full scores and pattern at a time, which is checked against the memory available)."""
    pos = tokens.shape[-1]
    check_fits(
        forward_pattern_bytes(model, pos)
        + len(layers) * model.cfg.n_heads * min(pos, last or pos) ** 2 * 4,
        what=f"the attention patterns of a {pos}-token prompt",
        fix="use a shorter prompt.",
    )
    kept = {}

    def keep(pattern: Tensor, hook) -> None:
        pattern = pattern[0] if last is None else pattern[0, :, -last:, -last:]
        kept[hook.layer()] = pattern.float().cpu().clone()

    with torch.inference_mode():
        model.run_with_hooks(
            tokens,
            fwd_hooks=[(f"blocks.{layer}.attn.hook_pattern", keep) for layer in layers],
            stop_at_layer=max(layers) + 1,
        )
    return {layer: kept[layer] for layer in layers}

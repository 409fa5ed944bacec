"""Attention patterns: computing them, and checking the layer and head indices that select them.
The views (mechlab.views) and figures (mechlab.plots) draw what this module computes."""

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.errors import InputError


def check_layer(model: HookedTransformer, layer: int) -> None:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < model.cfg.n_layers:
        raise InputError(
            f"layer {layer} is out of range: {model.cfg.model_name} has layers "
            f"0..{model.cfg.n_layers - 1}"
        )


def check_head(model: HookedTransformer, layer: int, head: int) -> None:
    if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < model.cfg.n_heads:
        raise InputError(
            f"head {layer}.{head} is out of range: {model.cfg.model_name} has heads "
            f"0..{model.cfg.n_heads - 1}"
        )


def check_heads(model: HookedTransformer, heads: list[tuple[int, int]]) -> None:
    """Every (layer, head) pair must exist; an empty selection is an error too."""
    if not heads:
        raise InputError("no heads selected: name at least one head, e.g. --heads 5.1,5.5")
    for layer, head in heads:
        check_layer(model, layer)
        check_head(model, layer, head)


def attention_patterns(
    model: HookedTransformer, tokens: Tensor, layers: list[int]
) -> dict[int, Float[Tensor, "n_heads query_pos key_pos"]]:
    """The first sequence's attention patterns at the given layers, caching nothing else."""
    wanted = {f"blocks.{layer}.attn.hook_pattern" for layer in layers}
    with torch.inference_mode():
        _, cache = model.run_with_cache(
            tokens, names_filter=lambda name: name in wanted, stop_at_layer=max(layers) + 1
        )
    return {layer: cache[f"blocks.{layer}.attn.hook_pattern"][0].float().cpu() for layer in layers}

"""The shape and the architectural choices of a from-scratch Transformer (mechlab.scratch.model),
checked when a Config is made. mechlab.scratch.convert translates TransformerLens's and Hugging
Face's configurations into one."""

import math
from dataclasses import dataclass
from typing import Literal, get_args

from mechlab.errors import ModelUnavailableError

Normalization = Literal["LN", "LNPre", "RMS", "RMSPre"]
Activation = Literal["gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "silu"]
AttentionType = Literal["global", "local"]


@dataclass(frozen=True)
class Config:
    """The shape and the architectural choices of a model; checked when it is made."""

    d_model: int
    n_layers: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    act_fn: Activation = "gelu_new"
    # "...Pre": the weightless form left after folding weights; None: no norms at all (the
    # grokking model of Nanda et al. 2023 has none)
    normalization: Normalization | None = "LN"
    eps: float = 1e-5
    positional: Literal["learned", "rotary"] = "learned"
    n_kv_heads: int | None = None  # fewer key/value heads than query heads: grouped-query attention
    gated_mlp: bool = False
    rotary_dim: int | None = None
    rotary_base: float = 10000.0
    attn_scale: float | None = None  # what attention scores are divided by; default sqrt(d_head)
    attn_only: bool = False  # blocks without MLPs, as in Elhage et al. (2021)'s toy models
    # What Gemma 3 changes (see the last section of this file); the defaults switch it all off.
    embed_scale: float = 1.0  # the embedding is multiplied by this (Gemma: sqrt(d_model))
    norm_offset: float = 0.0  # RMS norms scale by (norm_offset + w) (Gemma stores w - 1: 1.0)
    qk_norm: bool = False  # RMS-normalize each head's query and key before the rotation
    post_norms: bool = False  # normalize attention and MLP outputs before they join the residual
    attn_types: tuple[AttentionType, ...] | None = None  # per layer; None: every layer global
    window_size: int | None = None  # how many positions a local layer's query sees (itself too)
    rotary_base_local: float | None = None  # the rotary base of local layers (default: the same)

    def __post_init__(self):
        for name in ["d_model", "n_layers", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx"]:
            if getattr(self, name) < 1:
                raise ValueError(f"Config.{name} must be positive, got {getattr(self, name)}")
        if self.act_fn not in get_args(Activation):
            raise ModelUnavailableError(f"unsupported activation function {self.act_fn!r}")
        if self.normalization is not None and self.normalization not in get_args(Normalization):
            raise ModelUnavailableError(f"unsupported normalization {self.normalization!r}")
        if self.n_heads % self.kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}"
            )
        if self.positional == "rotary" and (self.rotary_dim or self.d_head) % 2:
            raise ValueError(f"rotary_dim must be even, got {self.rotary_dim}")
        if self.attn_types is not None:
            kinds = set(self.attn_types)
            if len(self.attn_types) != self.n_layers or not kinds <= {"global", "local"}:
                raise ValueError(
                    f"attn_types must give 'global' or 'local' for each of the {self.n_layers} "
                    f"layers, got {self.attn_types}"
                )
            if "local" in self.attn_types and (self.window_size or 0) < 1:
                raise ValueError("local attention layers need a positive window_size")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def scale(self) -> float:
        return self.attn_scale if self.attn_scale is not None else math.sqrt(self.d_head)

    def attn_type(self, layer: int) -> AttentionType:
        return self.attn_types[layer] if self.attn_types is not None else "global"

"""A transformer from scratch, read top to bottom: first GPT-2's pieces, then what Llama changes,
then what Gemma 3 changes.

Every contraction is an einops `einsum` with named dimensions and every tensor carries a jaxtyping
shape, using one glossary: batch pos d_model d_vocab n_heads d_head d_mlp query_pos key_pos layer
(plus n_kv_heads for grouped-query attention). Parameter names are TransformerLens's (W_E, W_pos,
W_Q/K/V/O, b_Q, W_in/W_out, W_U, b_U, ln1/ln2/ln_final with w/b), so importing its weights is a
copy.

There are no hooks: `Transformer.forward(tokens, return_activations=True)` returns the intermediate
values the parity check (mechlab.scratch.parity) compares against TransformerLens and Hugging Face.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast, get_args

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from mechlab.errors import InputError, ModelUnavailableError

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


# ==================================================================================================
# GPT-2's pieces


class LayerNorm(nn.Module):
    """Subtract the mean, divide by the standard deviation (biased, as in GPT-2), then scale and
    shift.

    With ``normalization="LNPre"`` there is no scale or shift: TransformerLens folds them into the
    next layer's weights (fold_ln), which leaves only the centring and rescaling here.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        if cfg.normalization == "LN":
            self.w = nn.Parameter(torch.ones(cfg.d_model))
            self.b = nn.Parameter(torch.zeros(cfg.d_model))

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        dtype = x.dtype  # the statistics in float32 even in a half-precision model
        x = x.float()
        x = x - x.mean(-1, keepdim=True)
        x = (x / (x.pow(2).mean(-1, keepdim=True) + self.cfg.eps).sqrt()).to(dtype)
        return x * self.w + self.b if self.cfg.normalization == "LN" else x


class Embed(nn.Module):
    """Look up each token's row of the embedding matrix W_E (Gemma then scales it by
    ``cfg.embed_scale``)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        embedded = self.W_E[tokens]
        return embedded * self.cfg.embed_scale if self.cfg.embed_scale != 1.0 else embedded


class PosEmbed(nn.Module):
    """Learned positional embeddings (GPT-2): position p adds row p of W_pos."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        batch, pos = tokens.shape
        return einops.repeat(self.W_pos[:pos], "pos d_model -> batch pos d_model", batch=batch)


class Attention(nn.Module):
    """Causal multi-head self-attention: each position mixes the values of itself and earlier
    positions, weighted by softmax(q . k / sqrt(d_head)). Llama's changes (rotary positions on q
    and k, fewer key/value heads shared by groups of query heads) and Gemma's (q/k norms, local
    layers with their own rotary base) are switched on by the config; `layer` says which kind of
    layer this is."""

    def __init__(self, cfg: Config, layer: int = 0):
        super().__init__()
        self.cfg = cfg
        self.local = cfg.attn_type(layer) == "local"
        self.rotary_base = (
            cfg.rotary_base_local
            if self.local and cfg.rotary_base_local is not None
            else cfg.rotary_base
        )
        self.W_Q = nn.Parameter(torch.empty(cfg.n_heads, cfg.d_model, cfg.d_head))
        self.W_K = nn.Parameter(torch.empty(cfg.kv_heads, cfg.d_model, cfg.d_head))
        self.W_V = nn.Parameter(torch.empty(cfg.kv_heads, cfg.d_model, cfg.d_head))
        self.W_O = nn.Parameter(torch.empty(cfg.n_heads, cfg.d_head, cfg.d_model))
        self.b_Q = nn.Parameter(torch.zeros(cfg.n_heads, cfg.d_head))
        self.b_K = nn.Parameter(torch.zeros(cfg.kv_heads, cfg.d_head))
        self.b_V = nn.Parameter(torch.zeros(cfg.kv_heads, cfg.d_head))
        self.b_O = nn.Parameter(torch.zeros(cfg.d_model))
        if cfg.qk_norm:  # Gemma 3: one RMSNorm over d_head for all query heads, one for the keys
            self.q_norm = RMSNorm(cfg, length=cfg.d_head, weighted=True)
            self.k_norm = RMSNorm(cfg, length=cfg.d_head, weighted=True)

    def forward(
        self, x: Float[Tensor, "batch pos d_model"], queries: int | None = None
    ) -> tuple[
        Float[Tensor, "batch query_pos d_model"],
        Float[Tensor, "batch n_heads query_pos key_pos"],
    ]:
        """Return the attention output and the attention pattern. With `queries`, only the last
        that many positions ask (every position is still a key and a value): what the last layer
        needs when only the last position's logits are wanted."""
        cfg = self.cfg
        start = x.shape[1] - (queries or x.shape[1])  # the first query's position
        # Biases are added in place (+=): a fresh tensor for each sum costs more than the add.
        q = einops.einsum(
            x[:, start:],
            self.W_Q,
            "batch query_pos d_model, n_heads d_model d_head -> batch query_pos n_heads d_head",
        )
        k = einops.einsum(
            x,
            self.W_K,
            "batch pos d_model, n_kv_heads d_model d_head -> batch pos n_kv_heads d_head",
        )
        v = einops.einsum(
            x,
            self.W_V,
            "batch pos d_model, n_kv_heads d_model d_head -> batch pos n_kv_heads d_head",
        )
        q += self.b_Q
        k += self.b_K
        v += self.b_V
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if cfg.positional == "rotary":
            q = apply_rotary(q, cfg, self.rotary_base, start=start)
            k = apply_rotary(k, cfg, self.rotary_base)
        if cfg.kv_heads != cfg.n_heads:
            # Grouped-query attention: query heads h*g .. h*g+g-1 all read key/value head h.
            group = cfg.n_heads // cfg.kv_heads
            k = einops.repeat(
                k, "batch pos n_kv_heads d_head -> batch pos (n_kv_heads group) d_head", group=group
            )
            v = einops.repeat(
                v, "batch pos n_kv_heads d_head -> batch pos (n_kv_heads group) d_head", group=group
            )
        scores = (
            einops.einsum(
                q,
                k,
                "batch query_pos n_heads d_head, batch key_pos n_heads d_head"
                " -> batch n_heads query_pos key_pos",
            )
            / cfg.scale
        )
        scores = causal_mask(scores)
        if self.local:
            scores = sliding_window_mask(scores, cast(int, cfg.window_size))  # Config checks it
        pattern = scores.softmax(-1)
        z = einops.einsum(
            pattern,
            v,
            "batch n_heads query_pos key_pos, batch key_pos n_heads d_head"
            " -> batch query_pos n_heads d_head",
        )
        out = einops.einsum(
            z, self.W_O, "batch pos n_heads d_head, n_heads d_head d_model -> batch pos d_model"
        )
        out += self.b_O
        return out, pattern


def causal_mask(
    scores: Float[Tensor, "batch n_heads query_pos key_pos"],
) -> Float[Tensor, "batch n_heads query_pos key_pos"]:
    """Hide the future: a query may attend to its own position and earlier ones only. The queries
    are the last query_pos positions (all of them, usually), so query i sits at position
    key_pos - query_pos + i."""
    query_pos, key_pos = scores.shape[-2:]
    future = torch.ones(query_pos, key_pos, dtype=torch.bool, device=scores.device).triu(
        diagonal=1 + key_pos - query_pos
    )
    return scores.masked_fill(future, float("-inf"))


def gelu_new(x: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """GPT-2's tanh approximation of GELU (Hendrycks & Gimpel 2016):
    0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))).

    PyTorch computes exactly this formula in one fused kernel; written out, it is five passes over
    the biggest activation in the model (about a tenth of the forward pass on GPT-2 small).
    """
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu_new": gelu_new,
    "gelu_pytorch_tanh": gelu_new,  # Hugging Face's name for the same tanh approximation
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
}


class MLP(nn.Module):
    """Two linear maps with a non-linearity between them, applied to each position on its own.
    Llama's gated form multiplies the up-projection by act(gate projection) instead."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.act = ACTIVATIONS[cfg.act_fn]
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        if cfg.gated_mlp:
            self.W_gate = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        pre = einops.einsum(x, self.W_in, "batch pos d_model, d_model d_mlp -> batch pos d_mlp")
        if self.cfg.gated_mlp:
            gate = einops.einsum(
                x, self.W_gate, "batch pos d_model, d_model d_mlp -> batch pos d_mlp"
            )
            # Llama has no b_in; TransformerLens adds it after the product, and so do we.
            hidden = self.act(gate) * pre + self.b_in
        else:
            pre += self.b_in
            hidden = self.act(pre)
        out = einops.einsum(
            hidden, self.W_out, "batch pos d_mlp, d_mlp d_model -> batch pos d_model"
        )
        out += self.b_out
        return out


class TransformerBlock(nn.Module):
    """Pre-norm residual block: resid + attn(norm(resid)), then + mlp(norm(resid)). An
    attention-only block (``cfg.attn_only``) stops after the attention. Gemma's post-norms
    (``cfg.post_norms``) normalize each output again before it is added: attn_out and mlp_out are
    what joins the residual stream."""

    def __init__(self, cfg: Config, layer: int = 0):
        super().__init__()
        self.cfg = cfg
        self.ln1, self.attn = make_norm(cfg), Attention(cfg, layer)
        if cfg.post_norms:  # never folded away: nothing linear follows them
            self.ln1_post = RMSNorm(cfg, weighted=True)
        if not cfg.attn_only:
            self.ln2, self.mlp = make_norm(cfg), MLP(cfg)
            if cfg.post_norms:
                self.ln2_post = RMSNorm(cfg, weighted=True)

    def forward(
        self, resid_pre: Float[Tensor, "batch pos d_model"], queries: int | None = None
    ) -> dict[str, Tensor]:
        """Return this block's activations: resid_pre, pattern, attn_out, resid_mid, mlp_out (not
        in an attention-only block), resid_post. With `queries`, everything after the attention's
        keys and values is computed for the last that many positions only."""
        attn_out, pattern = self.attn(self.ln1(resid_pre), queries)
        if queries is not None:
            resid_pre = resid_pre[:, -queries:]
        if self.cfg.post_norms:
            attn_out = self.ln1_post(attn_out)
        resid_mid = resid_pre + attn_out
        values = dict(resid_pre=resid_pre, pattern=pattern, attn_out=attn_out, resid_mid=resid_mid)
        if self.cfg.attn_only:
            return dict(values, resid_post=resid_mid)
        mlp_out = self.mlp(self.ln2(resid_mid))
        if self.cfg.post_norms:
            mlp_out = self.ln2_post(mlp_out)
        return dict(values, mlp_out=mlp_out, resid_post=resid_mid + mlp_out)


class Unembed(nn.Module):
    """Map the final residual stream to one logit per vocabulary token."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab))

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        logits = einops.einsum(
            x, self.W_U, "batch pos d_model, d_model d_vocab -> batch pos d_vocab"
        )
        logits += self.b_U
        return logits


# ==================================================================================================
# What Llama changes: RMSNorm instead of LayerNorm, rotary positions instead of W_pos
# (grouped-query attention and the gated MLP are the switches in Attention and MLP above)


class RMSNorm(nn.Module):
    """LayerNorm without the centring and without the shift: x / rms(x) * w (Zhang & Sennrich 2019).
    With ``normalization="RMSPre"`` the weight has been folded into the next layer.

    Gemma's norms scale by (1 + w) instead (``cfg.norm_offset``), and some of them are never folded
    (``weighted=True``) or normalize each head's d_head vector (``length``)."""

    def __init__(self, cfg: Config, *, length: int | None = None, weighted: bool | None = None):
        super().__init__()
        self.cfg = cfg
        self.weighted = cfg.normalization == "RMS" if weighted is None else weighted
        if self.weighted:
            self.w = nn.Parameter(torch.full((length or cfg.d_model,), 1.0 - cfg.norm_offset))

    def forward(self, x: Float[Tensor, "*position dim"]) -> Float[Tensor, "*position dim"]:
        dtype, x = x.dtype, x.float()  # the statistics in float32 even in a half-precision model
        x = (x / (x.pow(2).mean(-1, keepdim=True) + self.cfg.eps).sqrt()).to(dtype)
        return x * (self.cfg.norm_offset + self.w) if self.weighted else x


def make_norm(cfg: Config) -> nn.Module:
    if cfg.normalization is None:  # a model without norms passes the residual stream on as it is
        return nn.Identity()
    return LayerNorm(cfg) if cfg.normalization.startswith("LN") else RMSNorm(cfg)


def apply_rotary(
    x: Float[Tensor, "batch pos heads d_head"],
    cfg: Config,
    base: float | None = None,
    start: int = 0,
) -> Float[Tensor, "batch pos heads d_head"]:
    """Rotary position embedding (Su et al. 2021): rotate pairs of q/k dimensions by an angle that
    grows with the position, so q . k depends on the distance between the two positions.

    Like Hugging Face's Llama, dimension i is paired with i + rotary_dim/2 (not with i+1). `base`
    (default ``cfg.rotary_base``) sets the slowest frequency; Gemma's local layers use a smaller
    one. `start` is the position of x's first row (queries of the last positions only).
    """
    rotary_dim = cfg.rotary_dim or cfg.d_head
    pos = x.shape[1]
    inv_freq = (cfg.rotary_base if base is None else base) ** -(
        torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=x.device) / rotary_dim
    )
    positions = torch.arange(start, start + pos, dtype=torch.float32, device=x.device)
    angles = einops.einsum(positions, inv_freq, "pos, half -> pos half")
    angles = einops.repeat(angles, "pos half -> pos 1 (copy half)", copy=2)
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    first, second = x_rot.chunk(2, dim=-1)
    rotated_by_90 = torch.cat([-second, first], dim=-1)
    x_rot = x_rot * angles.cos().to(x.dtype) + rotated_by_90 * angles.sin().to(x.dtype)
    return torch.cat([x_rot, x_pass], dim=-1)


# ==================================================================================================
# What Gemma 3 changes (Gemma Team 2025); each is a switch in the pieces above, set by Config:
#
# - the embedding is multiplied by sqrt(d_model) (Embed, cfg.embed_scale);
# - every RMSNorm scales by (1 + w): the checkpoint stores w - 1 (RMSNorm, cfg.norm_offset);
# - each head's query and key are RMS-normalized before the rotation (Attention, cfg.qk_norm);
# - the attention and MLP outputs are normalized again before they join the residual stream
#   ("sandwich" norms: TransformerBlock, cfg.post_norms);
# - the gated MLP uses the tanh approximation of GELU where Llama uses SiLU (cfg.act_fn);
# - five of every six layers are local: a query sees only the last window_size positions
#   (sliding_window_mask below) and rotates with base 10,000; the global layers use 1,000,000;
# - scores are divided by sqrt(query_pre_attn_scalar) (cfg.attn_scale; equal to sqrt(d_head) in
#   the 270M model), and one key/value head serves all the query heads (grouped-query attention).


def sliding_window_mask(
    scores: Float[Tensor, "batch n_heads query_pos key_pos"], window: int
) -> Float[Tensor, "batch n_heads query_pos key_pos"]:
    """Hide the distant past too: a query at position q sees keys q - window + 1 .. q only (the
    queries being the last query_pos positions, as in causal_mask)."""
    query_pos, key_pos = scores.shape[-2:]
    distant = torch.ones(query_pos, key_pos, dtype=torch.bool, device=scores.device).tril(
        diagonal=-window + key_pos - query_pos
    )
    return scores.masked_fill(distant, float("-inf"))


# ==================================================================================================
# The whole model


class Transformer(nn.Module):
    """Embed the tokens, run the blocks over the residual stream, normalize, unembed to logits.

    A new model is initialised as GPT-2 is (Radford et al. 2019): every weight matrix from
    normal(0, 0.02), except the two that write into the residual stream inside each block (W_O and
    W_out), whose standard deviation is divided by sqrt(2 * n_layers) so the stream's variance does
    not grow with depth; norm weights at one and biases at zero. `seed` makes it reproducible
    (without one, torch's global generator is used).
    """

    INIT_STD = 0.02

    def __init__(self, cfg: Config, seed: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.pos_embed = PosEmbed(cfg) if cfg.positional == "learned" else None
        self.blocks = nn.ModuleList([TransformerBlock(cfg, layer) for layer in range(cfg.n_layers)])
        self.ln_final = make_norm(cfg)
        self.unembed = Unembed(cfg)
        self.init_weights(seed)

    def init_weights(self, seed: int | None = None) -> None:
        """GPT-2's initialisation (see the class docstring); norms and biases keep their ones and
        zeros."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        residual_std = self.INIT_STD / math.sqrt(2 * self.cfg.n_layers)
        with torch.no_grad():
            for name, param in self.named_parameters():
                kind = name.split(".")[-1]
                if not kind.startswith("W_"):
                    continue  # w (norms: ones) and b_... (biases: zeros)
                std = residual_std if kind in ("W_O", "W_out") else self.INIT_STD
                param.copy_(torch.normal(0.0, std, param.shape, generator=generator))

    def forward(
        self,
        tokens: Int[Tensor, "batch pos"],
        return_activations: bool = False,
        last_only: bool = False,
    ) -> (
        Float[Tensor, "batch query_pos d_vocab"]
        | tuple[Float[Tensor, "batch query_pos d_vocab"], dict[str, Tensor]]
    ):
        """Logits for every position; with `return_activations`, also a dict of every intermediate
        value, named like TransformerLens's hooks (``blocks.3.pattern``, ``ln_final``, ...).

        With `last_only`, the logits of the last position only ([batch, 1, d_vocab]): the last
        block's queries, MLP, the final norm and the unembedding then work on that position
        alone (as nanoGPT's generate does for its lm_head), which is most of a one-layer model."""
        self.check_tokens(tokens)
        activations: dict[str, Tensor] = {"embed": self.embed(tokens)}
        resid = activations["embed"]
        if self.pos_embed is not None:
            activations["pos_embed"] = self.pos_embed(tokens)
            resid = resid + activations["pos_embed"]
        for layer, block in enumerate(self.blocks):
            last_block = layer == len(self.blocks) - 1
            values = block(resid, 1 if last_only and last_block else None)
            resid = values["resid_post"]
            if return_activations:
                activations.update(
                    {f"blocks.{layer}.{name}": value for name, value in values.items()}
                )
        activations["ln_final"] = self.ln_final(resid)
        logits = self.unembed(activations["ln_final"])
        return (logits, activations) if return_activations else logits

    def check_tokens(self, tokens: Tensor) -> None:
        """Raise InputError for ids outside the vocabulary or sequences longer than the context."""
        if tokens.shape[-1] > self.cfg.n_ctx:
            raise InputError(
                f"sequence of {tokens.shape[-1]} tokens is longer than n_ctx={self.cfg.n_ctx}"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.d_vocab):
            raise InputError(
                f"token ids must lie in [0, {self.cfg.d_vocab}); got min {int(tokens.min())}, max "
                f"{int(tokens.max())}"
            )

    # ---------------------------------------------------------------------------------------------
    # Importing weights

    @classmethod
    def from_hooked(cls, model) -> "Transformer":
        """Copy a TransformerLens HookedTransformer's weights (processed with fold_ln or raw)."""
        cfg = config_from_hooked(model.cfg)
        scratch = cls(cfg).to(model.cfg.dtype)
        state = {}
        for name, value in model.state_dict().items():
            name = name.replace("attn._W_K", "attn.W_K").replace("attn._W_V", "attn.W_V")
            name = name.replace("attn._b_K", "attn.b_K").replace("attn._b_V", "attn.b_V")
            state[name] = value
        load_exactly(scratch, state)
        return scratch

    @classmethod
    def from_hf(cls, model) -> "Transformer":
        """Copy a Hugging Face GPT2LMHeadModel, LlamaForCausalLM or Gemma3ForCausalLM directly,
        without TransformerLens."""
        architecture = type(model).__name__
        if architecture == "GPT2LMHeadModel":
            cfg, state = _gpt2_from_hf(model)
        elif architecture == "LlamaForCausalLM":
            cfg, state = _llama_from_hf(model)
        elif architecture == "Gemma3ForCausalLM":
            cfg, state = _gemma3_from_hf(model)
        else:
            raise ModelUnavailableError(
                f"architecture {architecture} is not supported: from_hf reads GPT2LMHeadModel, "
                "LlamaForCausalLM and Gemma3ForCausalLM"
            )
        scratch = cls(cfg)
        load_exactly(scratch, state)
        return scratch


def load_exactly(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy `state` into `model`, ignoring buffers such as TransformerLens's masks, and insist that
    every parameter is given exactly once with the right shape."""
    parameters = dict(model.named_parameters())
    missing = set(parameters) - set(state)
    if missing:
        raise ModelUnavailableError(f"no weights for {sorted(missing)[:5]}")
    with torch.no_grad():
        for name, param in parameters.items():
            value = state[name]
            if value.shape != param.shape:
                raise ModelUnavailableError(
                    f"{name}: expected shape {tuple(param.shape)}, got {tuple(value.shape)}"
                )
            param.copy_(value)


def config_from_hooked(hooked_cfg) -> Config:
    """Translate a HookedTransformerConfig, refusing features this model does not implement by
    name."""
    unsupported = {
        "parallel_attn_mlp": hooked_cfg.parallel_attn_mlp,
        "scale_attn_by_inverse_layer_idx": hooked_cfg.scale_attn_by_inverse_layer_idx,
        "post_embedding_ln": hooked_cfg.post_embedding_ln,
        "num_experts": hooked_cfg.num_experts,
        "q/k norms over whole vectors (OLMo)": hooked_cfg.original_architecture
        in ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM"),
        "post-norm blocks (OLMo 2/3)": hooked_cfg.original_architecture
        in ("Olmo2ForCausalLM", "Olmo3ForCausalLM"),
        "rotary_adjacent_pairs": hooked_cfg.positional_embedding_type == "rotary"
        and hooked_cfg.rotary_adjacent_pairs,
        "use_NTK_by_parts_rope": hooked_cfg.use_NTK_by_parts_rope,
        "attn_scores_soft_cap": hooked_cfg.attn_scores_soft_cap > 0,
        "output_logits_soft_cap": hooked_cfg.output_logits_soft_cap > 0,
        "final_rms with LayerNorm blocks": hooked_cfg.final_rms
        and hooked_cfg.normalization_type in ("LN", "LNPre"),
        f"positional_embedding_type={hooked_cfg.positional_embedding_type!r}": (
            hooked_cfg.positional_embedding_type not in ("standard", "rotary")
        ),
        f"normalization_type={hooked_cfg.normalization_type!r}": hooked_cfg.normalization_type
        not in (*get_args(Normalization), None),
        f"act_fn={hooked_cfg.act_fn!r}": not hooked_cfg.attn_only
        and hooked_cfg.act_fn not in get_args(Activation),
    }
    present = [feature for feature, on in unsupported.items() if on]
    if present:
        raise ModelUnavailableError(
            f"{hooked_cfg.model_name}: the from-scratch Transformer does not implement "
            f"{', '.join(present)}"
        )
    return Config(
        d_model=hooked_cfg.d_model,
        n_layers=hooked_cfg.n_layers,
        n_heads=hooked_cfg.n_heads,
        d_head=hooked_cfg.d_head,
        d_mlp=hooked_cfg.d_mlp or 1,  # attention-only models have none
        d_vocab=hooked_cfg.d_vocab,
        n_ctx=hooked_cfg.n_ctx,
        act_fn=hooked_cfg.act_fn or "gelu_new",
        normalization=hooked_cfg.normalization_type,
        eps=hooked_cfg.eps,
        positional="rotary" if hooked_cfg.positional_embedding_type == "rotary" else "learned",
        n_kv_heads=hooked_cfg.n_key_value_heads,
        gated_mlp=hooked_cfg.gated_mlp,
        rotary_dim=hooked_cfg.rotary_dim,
        rotary_base=float(hooked_cfg.rotary_base),
        attn_scale=hooked_cfg.attn_scale if hooked_cfg.use_attn_scale else 1.0,
        attn_only=hooked_cfg.attn_only,
        # TransformerLens stores Gemma's embedding already scaled and its norm weights as 1 + w
        qk_norm=hooked_cfg.use_qk_norm,
        post_norms=hooked_cfg.use_normalization_before_and_after,
        attn_types=tuple(hooked_cfg.attn_types) if hooked_cfg.use_local_attn else None,
        window_size=hooked_cfg.window_size if hooked_cfg.use_local_attn else None,
        rotary_base_local=None
        if hooked_cfg.rotary_base_local is None
        else float(hooked_cfg.rotary_base_local),
    )


def _gpt2_from_hf(model) -> tuple[Config, dict[str, Tensor]]:
    """GPT-2's checkpoint: Conv1D weights are stored [in, out] and q, k, v are fused in c_attn."""
    hf = model.config
    if hf.scale_attn_by_inverse_layer_idx or hf.reorder_and_upcast_attn:
        raise ModelUnavailableError(
            "GPT-2 with scale_attn_by_inverse_layer_idx or reorder_and_upcast_attn is not supported"
        )
    cfg = Config(
        d_model=hf.n_embd,
        n_layers=hf.n_layer,
        n_heads=hf.n_head,
        d_head=hf.n_embd // hf.n_head,
        d_mlp=hf.n_inner or 4 * hf.n_embd,
        d_vocab=hf.vocab_size,
        n_ctx=hf.n_positions,
        act_fn=hf.activation_function,
        eps=hf.layer_norm_epsilon,
        attn_scale=None if hf.scale_attn_weights else 1.0,
    )
    gpt = model.transformer
    state = {
        "embed.W_E": gpt.wte.weight,
        "pos_embed.W_pos": gpt.wpe.weight,
        "ln_final.w": gpt.ln_f.weight,
        "ln_final.b": gpt.ln_f.bias,
        "unembed.W_U": model.lm_head.weight.T,
        "unembed.b_U": torch.zeros(cfg.d_vocab),
    }
    for layer, block in enumerate(gpt.h):
        prefix = f"blocks.{layer}"
        W_Q, W_K, W_V = block.attn.c_attn.weight.split(cfg.d_model, dim=1)
        b_Q, b_K, b_V = block.attn.c_attn.bias.split(cfg.d_model)
        for name, weight, bias in [("Q", W_Q, b_Q), ("K", W_K, b_K), ("V", W_V, b_V)]:
            state[f"{prefix}.attn.W_{name}"] = einops.rearrange(
                weight, "d_model (n_heads d_head) -> n_heads d_model d_head", n_heads=cfg.n_heads
            )
            state[f"{prefix}.attn.b_{name}"] = einops.rearrange(
                bias, "(n_heads d_head) -> n_heads d_head", n_heads=cfg.n_heads
            )
        state[f"{prefix}.attn.W_O"] = einops.rearrange(
            block.attn.c_proj.weight,
            "(n_heads d_head) d_model -> n_heads d_head d_model",
            n_heads=cfg.n_heads,
        )
        state[f"{prefix}.attn.b_O"] = block.attn.c_proj.bias
        state.update(
            {
                f"{prefix}.ln1.w": block.ln_1.weight,
                f"{prefix}.ln1.b": block.ln_1.bias,
                f"{prefix}.ln2.w": block.ln_2.weight,
                f"{prefix}.ln2.b": block.ln_2.bias,
                f"{prefix}.mlp.W_in": block.mlp.c_fc.weight,
                f"{prefix}.mlp.b_in": block.mlp.c_fc.bias,
                f"{prefix}.mlp.W_out": block.mlp.c_proj.weight,
                f"{prefix}.mlp.b_out": block.mlp.c_proj.bias,
            }
        )
    return cfg, state


def _llama_from_hf(model) -> tuple[Config, dict[str, Tensor]]:
    """Llama's checkpoint: nn.Linear weights are stored [out, in]; no biases anywhere."""
    hf = model.config
    if getattr(hf, "attention_bias", False) or getattr(hf, "mlp_bias", False):
        raise ModelUnavailableError("Llama with attention_bias or mlp_bias is not supported")
    rope = getattr(hf, "rope_parameters", None) or getattr(hf, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ModelUnavailableError(
            f"Llama rope scaling {rope.get('rope_type')!r} is not supported"
        )
    d_head = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    cfg = Config(
        d_model=hf.hidden_size,
        n_layers=hf.num_hidden_layers,
        n_heads=hf.num_attention_heads,
        d_head=d_head,
        d_mlp=hf.intermediate_size,
        d_vocab=hf.vocab_size,
        n_ctx=hf.max_position_embeddings,
        act_fn=hf.hidden_act,
        normalization="RMS",
        eps=hf.rms_norm_eps,
        positional="rotary",
        gated_mlp=True,
        n_kv_heads=hf.num_key_value_heads,
        rotary_dim=d_head,
        rotary_base=float(rope.get("rope_theta", getattr(hf, "rope_theta", 10000.0))),
    )
    return cfg, _llama_weights(model, cfg)


def _llama_weights(model, cfg: Config) -> dict[str, Tensor]:
    """The weights Llama's layout names (Gemma 3 shares them): embedding, attention, gated MLP,
    the norms before attention and MLP, the final norm and the unembedding."""
    llama, d_head = model.model, cfg.d_head
    state = {
        "embed.W_E": llama.embed_tokens.weight,
        "ln_final.w": llama.norm.weight,
        "unembed.W_U": model.lm_head.weight.T,
        "unembed.b_U": torch.zeros(cfg.d_vocab),
    }
    for layer, block in enumerate(llama.layers):
        prefix, attn, mlp = f"blocks.{layer}", block.self_attn, block.mlp
        for name, proj, heads in [
            ("Q", attn.q_proj, cfg.n_heads),
            ("K", attn.k_proj, cfg.kv_heads),
            ("V", attn.v_proj, cfg.kv_heads),
        ]:
            state[f"{prefix}.attn.W_{name}"] = einops.rearrange(
                proj.weight, "(heads d_head) d_model -> heads d_model d_head", heads=heads
            )
            state[f"{prefix}.attn.b_{name}"] = torch.zeros(heads, d_head)
        state[f"{prefix}.attn.W_O"] = einops.rearrange(
            attn.o_proj.weight,
            "d_model (n_heads d_head) -> n_heads d_head d_model",
            n_heads=cfg.n_heads,
        )
        state[f"{prefix}.attn.b_O"] = torch.zeros(cfg.d_model)
        state.update(
            {
                f"{prefix}.ln1.w": block.input_layernorm.weight,
                f"{prefix}.ln2.w": block.post_attention_layernorm.weight,
                f"{prefix}.mlp.W_in": mlp.up_proj.weight.T,
                f"{prefix}.mlp.W_gate": mlp.gate_proj.weight.T,
                f"{prefix}.mlp.b_in": torch.zeros(cfg.d_mlp),
                f"{prefix}.mlp.W_out": mlp.down_proj.weight.T,
                f"{prefix}.mlp.b_out": torch.zeros(cfg.d_model),
            }
        )
    return state


def _gemma3_from_hf(model) -> tuple[Config, dict[str, Tensor]]:
    """Gemma 3's checkpoint: Llama's layout, plus q/k norms and four norms per block, every norm
    weight stored as w - 1, and the embedding stored unscaled (tied to the unembedding)."""
    hf = model.config
    rope = hf.rope_parameters
    if {rope[kind].get("rope_type", "default") for kind in rope} != {"default"}:
        raise ModelUnavailableError("Gemma 3 with rope scaling is not supported")
    if hf.attn_logit_softcapping or hf.final_logit_softcapping:
        raise ModelUnavailableError("Gemma 3 with logit soft-capping is not supported")
    kinds: dict[str, AttentionType] = {"sliding_attention": "local", "full_attention": "global"}
    cfg = Config(
        d_model=hf.hidden_size,
        n_layers=hf.num_hidden_layers,
        n_heads=hf.num_attention_heads,
        d_head=hf.head_dim,
        d_mlp=hf.intermediate_size,
        d_vocab=hf.vocab_size,
        n_ctx=hf.max_position_embeddings,
        act_fn=hf.hidden_activation,
        normalization="RMS",
        eps=hf.rms_norm_eps,
        positional="rotary",
        gated_mlp=True,
        n_kv_heads=hf.num_key_value_heads,
        rotary_dim=hf.head_dim,
        rotary_base=float(rope["full_attention"]["rope_theta"]),
        rotary_base_local=float(rope["sliding_attention"]["rope_theta"]),
        attn_scale=math.sqrt(hf.query_pre_attn_scalar),
        embed_scale=math.sqrt(hf.hidden_size),
        norm_offset=1.0,
        qk_norm=True,
        post_norms=True,
        attn_types=tuple(kinds[kind] for kind in hf.layer_types),
        window_size=hf.sliding_window,
    )
    # Llama's names for everything the two share. Then Gemma's own norms: its
    # post_attention_layernorm normalizes the attention's output (in Llama it is the MLP's input
    # norm, so ln2 is replaced), and it adds a norm after the MLP and the query and key norms.
    state = _llama_weights(model, cfg)
    for layer, block in enumerate(model.model.layers):
        prefix = f"blocks.{layer}"
        state.update(
            {
                f"{prefix}.ln1_post.w": block.post_attention_layernorm.weight,
                f"{prefix}.ln2.w": block.pre_feedforward_layernorm.weight,
                f"{prefix}.ln2_post.w": block.post_feedforward_layernorm.weight,
                f"{prefix}.attn.q_norm.w": block.self_attn.q_norm.weight,
                f"{prefix}.attn.k_norm.w": block.self_attn.k_norm.weight,
            }
        )
    return cfg, state


# ==================================================================================================
# Back to the library: every mechlab tool runs on a HookedTransformer


def hooked_config(cfg: Config, name: str = "scratch"):
    """The HookedTransformerConfig of a model with this Config (the inverse of
    config_from_hooked)."""
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        model_name=name,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_head=cfg.d_head,
        d_mlp=None if cfg.attn_only else cfg.d_mlp,
        d_vocab=cfg.d_vocab,
        n_ctx=cfg.n_ctx,
        act_fn=cast(str, None if cfg.attn_only else cfg.act_fn),  # None: no MLP
        normalization_type=cfg.normalization,
        eps=cfg.eps,
        positional_embedding_type="rotary" if cfg.positional == "rotary" else "standard",
        n_key_value_heads=cfg.n_kv_heads,
        gated_mlp=cfg.gated_mlp,
        rotary_dim=(cfg.rotary_dim or cfg.d_head) if cfg.positional == "rotary" else None,
        rotary_base=cfg.rotary_base,
        rotary_adjacent_pairs=False,
        final_rms=(cfg.normalization or "").startswith("RMS"),
        attn_only=cfg.attn_only,
        use_attn_scale=cfg.attn_scale != 1.0,
        attn_scale=cfg.scale,
        use_qk_norm=cfg.qk_norm,
        use_normalization_before_and_after=cfg.post_norms,
        use_local_attn=cfg.attn_types is not None,
        attn_types=list(cfg.attn_types) if cfg.attn_types is not None else None,
        window_size=cfg.window_size,
        rotary_base_local=cfg.rotary_base_local,
        default_prepend_bos=True,
        device="cpu",
    )


def to_hooked(scratch: Transformer, *, tokenizer=None, name: str = "scratch"):
    """A TransformerLens HookedTransformer with `scratch`'s weights (copied), so that every
    mechlab tool (head scan, lens, views, patching) runs on a model the learner built or
    trained."""
    from transformer_lens import HookedTransformer

    cfg = scratch.cfg
    hooked = HookedTransformer(hooked_config(cfg, name), tokenizer=tokenizer)
    state = {}
    grouped = cfg.kv_heads != cfg.n_heads
    for key, value in scratch.state_dict().items():
        # TransformerLens stores Gemma's embedding scaled and its norm weights as 1 + w
        if key == "embed.W_E":
            value = value * cfg.embed_scale
        elif key.endswith(".w") and (cfg.normalization or "").startswith("RMS"):
            value = value + cfg.norm_offset
        if grouped:  # TransformerLens keeps grouped key/value weights under private names
            for part in ("W_K", "W_V", "b_K", "b_V"):
                key = key.replace(f"attn.{part}", f"attn._{part}")
        state[key] = value.detach().clone()
    missing, unexpected = hooked.load_state_dict(state, strict=False)
    buffers = ("mask", "IGNORE", "rotary_sin", "rotary_cos")  # built by the library itself
    missing = [key for key in missing if not key.endswith(buffers)]
    if missing or unexpected:
        raise ModelUnavailableError(
            f"to_hooked: the weights do not line up (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]})"
        )
    return hooked.eval()

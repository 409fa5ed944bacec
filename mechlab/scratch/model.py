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
from typing import cast

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from mechlab.errors import InputError
from mechlab.moved import moved_names
from mechlab.scratch import convert
from mechlab.scratch.config import Config

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
        cfg, state = convert.from_hooked(model)
        scratch = cls(cfg).to(model.cfg.dtype)
        convert.load_exactly(scratch, state)
        return scratch

    @classmethod
    def from_hf(cls, model) -> "Transformer":
        """Copy a Hugging Face GPT2LMHeadModel, LlamaForCausalLM or Gemma3ForCausalLM directly,
        without TransformerLens (mechlab.scratch.convert reads each checkpoint's layout)."""
        cfg, state = convert.from_hf(model)
        scratch = cls(cfg)
        convert.load_exactly(scratch, state)
        return scratch


# moved to mechlab.scratch.convert (the old paths still work)
__getattr__ = moved_names(
    __name__,
    dict.fromkeys(
        ["config_from_hooked", "hooked_config", "load_exactly", "to_hooked"],
        "mechlab.scratch.convert",
    ),
)

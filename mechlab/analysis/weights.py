"""A model's weights as the analyses read them: a hash that names them (what a saved lens, SAE or
record belongs to), each head's matrices with the norms folded in (`head_weights`), and the full
OV circuit's copying score computed without the vocabulary-sized matrix. The circuits from the
weights (mechlab.analysis.circuits) and the head scan's copying score (mechlab.analysis.heads)
share them."""

import hashlib
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens import HookedTransformer


def weights_sha256(model: HookedTransformer) -> str:
    """A hash of every parameter, by name: which model a lens belongs to."""
    digest = hashlib.sha256()
    for name, param in sorted(model.state_dict().items()):
        if not name.endswith((".IGNORE", ".mask")):
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def attention_output_norms(model: HookedTransformer, layer: int) -> list[str]:
    """The norms (module names, in order) between block `layer`'s attention output ``z W_O + b_O``
    and the residual stream, as TransformerLens's TransformerBlock applies them: ``ln1_post`` in
    models with norms before and after each sublayer (Gemma 2 and 3), ``ln1`` in post-norm ones
    (OLMo 2). The MLP's post-norms come before ``hook_mlp_out``, so they need nothing here."""
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    block = model.blocks[layer]
    names = []
    if model.cfg.use_normalization_before_and_after:
        names.append(f"blocks.{layer}.ln1_post")
    if model.cfg.original_architecture in POST_NORM_ARCHITECTURES:
        names.append(f"blocks.{layer}.ln1")
    return [
        name
        for name in names
        if not isinstance(block.get_submodule(name.split(".")[-1]), nn.Identity)
    ]


# --------------------------------------------------------------------------------------------------
# The weights, with norms folded in


@dataclass
class HeadWeights:
    """A model's weights as the circuits see them: float32, norms folded in (see the module
    docstring), biases dropped. W_K and W_V have one entry per key/value head; query head h reads
    key/value head h // group."""

    W_Q: Float[Tensor, "layer n_heads d_model d_head"]
    W_K: Float[Tensor, "layer n_kv_heads d_model d_head"]
    W_V: Float[Tensor, "layer n_kv_heads d_model d_head"]
    W_O: Float[Tensor, "layer n_heads d_head d_model"]
    W_E: Float[Tensor, "d_vocab d_model"]
    W_U: Float[Tensor, "d_model d_vocab"]
    W_pos: Float[Tensor, "n_ctx d_model"] | None  # learned positions only
    attn_scale: float  # what attention scores are divided by

    @property
    def n_layers(self) -> int:
        return self.W_Q.shape[0]

    @property
    def n_heads(self) -> int:
        return self.W_Q.shape[1]

    @property
    def group(self) -> int:
        return self.W_Q.shape[1] // self.W_K.shape[1]

    def kv(
        self, tensor: Float[Tensor, "layer n_kv_heads ..."]
    ) -> Float[Tensor, "layer n_heads ..."]:
        """A per-key/value-head tensor [layer, n_kv_heads, ...] repeated for each query head."""
        return tensor.repeat_interleave(self.group, dim=1)


def _centre(matrix: Tensor, dim: int) -> Tensor:
    return matrix - matrix.mean(dim, keepdim=True)


def per_head(
    norm_weight: Float[Tensor, " width"], matrix: Float[Tensor, "heads d_model d_head"]
) -> Float[Tensor, "*scale d_head"]:
    """A query or key norm's weight shaped to scale `matrix` ([heads, d_model, d_head]): one
    d_head vector shared by the heads (Gemma), or one over all heads' d_head vectors (OLMoE)."""
    heads, _, d_head = matrix.shape
    weight = norm_weight.detach().float()
    return weight if weight.numel() == d_head else weight.reshape(heads, 1, d_head)


def head_weights(model: HookedTransformer, vocabulary: bool = True) -> HeadWeights:
    """The folded float32 weights of `model` (see the module docstring). Folding, centring and
    centring the unembedding are each idempotent, so a model TransformerLens has processed already
    comes out the same as its raw weights. In post-norm models (OLMo 2) the norm after each
    attention output is folded into W_O like Gemma's ln1_post, and nothing into W_Q, W_K, W_V.
    Without `vocabulary`, W_E and W_U are left empty (d_vocab 0): no vocabulary-sized copies for
    what needs only the heads (and `unembed_embed`)."""
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    cfg = model.cfg
    post_norm = cfg.original_architecture in POST_NORM_ARCHITECTURES  # ln1 follows attention
    layer_norm = cfg.normalization_type in ("LN", "LNPre")
    stacked: dict[str, Tensor] = {}  # filled a layer at a time: a list then a stack would hold two

    def put(name: str, layer: int, tensor: Tensor) -> None:
        if name not in stacked:
            stacked[name] = tensor.new_empty(cfg.n_layers, *tensor.shape)
        stacked[name][layer] = tensor

    with torch.no_grad():
        for layer, block in enumerate(model.blocks):
            attn = block.attn
            grouped = hasattr(attn, "_W_K")
            q = attn.W_Q.detach().float()
            k = getattr(attn, "_W_K" if grouped else "W_K").detach().float()
            v = getattr(attn, "_W_V" if grouped else "W_V").detach().float()
            o = attn.W_O.detach().float()
            if cfg.normalization_type in ("LN", "RMS") and not post_norm:  # fold it now
                w = getattr(block.ln1, "w").float()[:, None]  # noqa: B009 (typed as a Module)
                q, k, v = q * w, k * w, v * w
            if cfg.use_qk_norm:  # Gemma: each head's q and k are scaled by these weights
                q = q * per_head(getattr(attn.q_norm, "w"), q)  # noqa: B009
                k = k * per_head(getattr(attn.k_norm, "w"), k)  # noqa: B009
            for name in attention_output_norms(model, layer):
                o = o * getattr(model.get_submodule(name), "w").float()  # noqa: B009
            if layer_norm:  # LayerNorm centres what it reads, so only the centred parts matter
                q, k, v, o = _centre(q, -2), _centre(k, -2), _centre(v, -2), _centre(o, -1)
            for name, tensor in zip(("W_Q", "W_K", "W_V", "W_O"), (q, k, v, o), strict=True):
                put(name, layer, tensor)
            del q, k, v, o
        W_pos = (
            model.W_pos.detach().float() if cfg.positional_embedding_type == "standard" else None
        )
        if layer_norm:
            W_pos = _centre(W_pos, -1) if W_pos is not None else None
        if not vocabulary:
            W_E, W_U = torch.empty(0, cfg.d_model), torch.empty(cfg.d_model, 0)
        else:
            W_E = model.W_E.detach().float()
            W_U = model.W_U.detach().float()
            if cfg.normalization_type in ("LN", "RMS"):
                W_U = W_U * getattr(model.ln_final, "w").float()[:, None]  # noqa: B009
            if layer_norm:
                W_E, W_U = _centre(W_E, -1), _centre(W_U, 0)
            W_U = _centre(W_U, -1)  # center_unembed: logits shift by a constant per position
    return HeadWeights(
        **stacked,
        W_E=W_E,
        W_U=W_U,
        W_pos=W_pos,
        attn_scale=float(cfg.attn_scale) if cfg.use_attn_scale else 1.0,
    )


# --------------------------------------------------------------------------------------------------
# The full OV circuit W_E W_OV W_U: copying


def unembed_embed(model: HookedTransformer) -> Float[Tensor, "d_model d_model"]:
    """W_U W_E as `head_weights` folds and centres them, without a folded copy of either
    vocabulary-sized matrix: the final norm's weight D and the centrings P (over d_model) and Q
    (over the vocabulary) move onto the small product, P D W_U Q W_E P, with
    W_U Q W_E = W_U W_E - (W_U 1)(1^T W_E) / d_vocab."""
    cfg = model.cfg
    with torch.no_grad():
        W_U, W_E = model.W_U.detach().float(), model.W_E.detach().float()
        product = W_U @ W_E - torch.outer(W_U.sum(-1), W_E.sum(0)) / W_E.shape[0]
        if cfg.normalization_type in ("LN", "RMS"):
            product = product * getattr(model.ln_final, "w").float()[:, None]  # noqa: B009
        if cfg.normalization_type in ("LN", "LNPre"):
            product = _centre(_centre(product, 0), -1)
    return product


def copying_scores(
    weights: HeadWeights, unembed_embed: Float[Tensor, "d_model d_model"] | None = None
) -> Float[Tensor, "layer n_heads"]:
    """Elhage et al.'s copying measure of each head's full OV circuit W_E W_V W_O W_U
    (d_vocab x d_vocab): sum(eigenvalues) / sum(|eigenvalues|), in [-1, 1], near 1 when the head
    copies the tokens it attends to. Its non-zero eigenvalues are those of the cyclically permuted
    d_head x d_head product W_O (W_U W_E) W_V, so the vocabulary-sized matrix is never formed
    (W_U W_E from the weights, or `unembed_embed` when given)."""
    if unembed_embed is None:  # [d_model, d_model]: the only product over d_vocab
        unembed_embed = weights.W_U @ weights.W_E
    core = weights.W_O @ unembed_embed @ weights.kv(weights.W_V)  # [layer, n_heads, d_head, d_head]
    eigenvalues = torch.linalg.eigvals(core.double())
    return (eigenvalues.sum(-1).real / eigenvalues.abs().sum(-1)).float()

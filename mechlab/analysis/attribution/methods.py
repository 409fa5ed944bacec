"""The attribution methods (see mechlab.analysis.attribution), the result they return, and
`attribute`, which runs one."""

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.analysis.attribution.integration import (
    COMPLETENESS_TOLERANCE,
    PANEL_NODES,
    EmbeddingPath,
    adaptive_integrated_gradients,
    integrated_gradients,
)
from mechlab.analysis.attribution.target import Target, baseline_token, chunk_size, gradients
from mechlab.analysis.tokens import (
    PromptOrTokens,
    answer_ids,
    check_model,
    one_prompt,
    token_strings,
)
from mechlab.analysis.tokens import check_layer as check_index
from mechlab.defaults import (
    ATTRIBUTION_MAX_BUDGET,
    ATTRIBUTION_MAX_STEPS,
    ATTRIBUTION_METHODS,
    ATTRIBUTION_STEP_BUDGET,
)
from mechlab.errors import InputError, MechlabWarning

METHODS = ATTRIBUTION_METHODS
BASELINE_METHODS = ("integrated_gradients", "occlusion")  # the methods that use the baseline
MAX_STEPS = ATTRIBUTION_MAX_STEPS
MAX_BUDGET = ATTRIBUTION_MAX_BUDGET
QUADRATURES = ("adaptive", "gauss_legendre")


@dataclass
class TokenAttribution:
    """One attribution of a prompt's tokens to the model's answer (see the module docstring)."""

    model: str
    prompt: str
    answer: str
    wrong: str | None
    tokens: list[str]
    scores: Float[Tensor, " pos"]
    method: str
    target: float  # the model's own logit (difference) at the last position
    baseline_target: float | None  # the same with every token at the baseline (IG, occlusion)
    delta: float | None  # integrated gradients: scores.sum() - (target - baseline_target)
    steps: int | None  # integrated gradients' quadrature nodes, all of them (refinements included)
    baseline: str
    layer: int | None = None  # layer_gradient_x_activation: the block whose input is weighted
    kept_bos: bool = False  # position 0 is the BOS every baseline keeps: scored, never ranked
    max_steps: int | None = None  # integrated gradients: the budget of nodes
    quadrature: str | None = None  # integrated gradients: "adaptive" or "gauss_legendre"

    @property
    def what(self) -> str:
        return f"logit({self.answer!r})" + (
            f" - logit({self.wrong!r})" if self.wrong is not None else ""
        )

    @property
    def ranked(self) -> Float[Tensor, " ranked"]:
        """The scores of the positions that take part in rankings (all but a kept BOS)."""
        return self.scores[1:] if self.kept_bos else self.scores

    @property
    def relative_delta(self) -> float | None:
        """Integrated gradients' completeness gap as a share of what it should add up to."""
        if self.delta is None or self.baseline_target is None:
            return None
        return abs(self.delta) / max(abs(self.target - self.baseline_target), 1e-6)

    def top(self, k: int = 3) -> list[tuple[int, str, float]]:
        """The k ranked positions with the largest scores, as (position, token, score)."""
        first = 1 if self.kept_bos else 0
        order = self.ranked.argsort(descending=True)[:k].tolist()
        return [(first + i, self.tokens[first + i], self.scores[first + i].item()) for i in order]

    def __repr__(self) -> str:
        position, token, score = self.top(1)[0]
        complete = "" if self.delta is None else f", delta {self.delta:+.2g}"
        return (
            f"TokenAttribution({self.model}, {self.method}: {self.what} = {self.target:.3f}; "
            f"top token {token!r} at {position} ({score:+.3g}){complete})"
        )

    def _repr_html_(self) -> str:
        from mechlab.present.attribution import attribution_html

        return attribution_html([self])

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "answer": self.answer,
            "wrong": self.wrong,
            "tokens": self.tokens,
            "scores": self.scores.tolist(),
            "method": self.method,
            "target": self.target,
            "baseline_target": self.baseline_target,
            "delta": self.delta,
            "relative_delta": self.relative_delta,
            "steps": self.steps,
            "baseline": self.baseline,
            "layer": self.layer,
            "kept_bos": self.kept_bos,
            "max_steps": self.max_steps,
            "quadrature": self.quadrature,
        }


def attribution_prompts() -> list[dict]:
    """The fixed prompt set of the method table, the benchmark and the tests: 57 prompts with
    one-token answers (and a wrong answer each) on which SmolLM2 prefers the answer: factual
    recall, indirect objects, induction-style repeats (``kind``, ``prompt``, ``answer``,
    ``wrong``), from ``mechlab/data/attribution_prompts.jsonl``."""
    import json
    from importlib.resources import files

    text = files("mechlab.data").joinpath("attribution_prompts.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def check_method(method: str) -> str:
    if method not in METHODS:
        raise InputError(
            f"unknown attribution method {method!r}: choose one of {', '.join(METHODS)}"
        )
    return method


def check_steps(steps: int, max_steps: int | None = None, quadrature: str = "adaptive") -> int:
    """Integrated gradients' first nodes, budget and rule (InputError when out of range)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InputError(
            f"steps must be a whole number from 1 to {MAX_STEPS}, got {steps!r}: 64 is the "
            "default, and the adaptive rule adds nodes where they are needed"
        )
    if quadrature not in QUADRATURES:
        raise InputError(
            f"unknown quadrature {quadrature!r}: choose one of {', '.join(QUADRATURES)}"
        )
    if max_steps is not None and (
        isinstance(max_steps, bool)
        or not isinstance(max_steps, int)
        or not steps <= max_steps <= MAX_BUDGET
    ):
        raise InputError(
            f"max_steps must be a whole number from steps ({steps}) to {MAX_BUDGET}, got "
            f"{max_steps!r}: it is the adaptive rule's budget of nodes (default "
            f"{ATTRIBUTION_STEP_BUDGET})"
        )
    return steps


def check_layer(model: HookedTransformer, layer: int | None) -> int:
    """layer_gradient_x_activation's block: `layer`, checked, or the middle one when None."""
    if layer is None:
        return model.cfg.n_layers // 2
    check_index(model, layer)
    return layer


def occlusion(
    target: Target, base: Float[Tensor, "pos d_model"], chunk: int
) -> Float[Tensor, " pos"]:
    """How far the target falls when each token alone is replaced by the baseline (a kept BOS:
    0)."""
    first = 1 if target.kept_bos else 0
    positions = torch.arange(first, len(target.embed))
    batch = target.embed.expand(len(positions), -1, -1).clone()
    batch[torch.arange(len(positions)), positions] = base[positions]
    scores = torch.zeros(len(target.embed), dtype=torch.float64)
    own = target.values(target.embed.unsqueeze(0), 1)[0]
    scores[positions] = (own - target.values(batch, chunk)).double().cpu()
    return scores


def rollout(
    layers: list[Float[Tensor, "query_pos key_pos"]], *, residual: str
) -> Float[Tensor, "query_pos key_pos"]:
    """Roll per-layer ``[q, k]`` attention out through the layers (float64): Abnar & Zuidema's
    product of ``0.5 A + 0.5 I`` (residual="half"), or Chefer et al.'s ``R <- R + A R`` from the
    identity (residual="add")."""
    pos = layers[0].shape[-1]
    eye = torch.eye(pos, dtype=torch.float64)
    result = eye.clone()
    for attention in layers:
        attention = attention.double().cpu()
        if residual == "half":
            mixed = 0.5 * attention + 0.5 * eye
            result = (mixed / mixed.sum(-1, keepdim=True)) @ result
        else:
            result = result + attention @ result
    return result


def attribute(
    model: HookedTransformer,
    prompt: PromptOrTokens,
    *,
    answer: str | int,
    wrong: str | int | None = None,
    method: str = "integrated_gradients",
    layer: int | None = None,
    steps: int = 64,
    baseline: str = "zero",
    max_steps: int = ATTRIBUTION_STEP_BUDGET,
    quadrature: str = "adaptive",
    progress: bool = False,
) -> TokenAttribution:
    """Attribute the answer's logit at the last position of `prompt` (or the logit difference
    ``logit(answer) - logit(wrong)``) to the prompt's tokens, by `method` (see the module
    docstring for the methods, the baselines and what is left out).

    The target is a logit, never a probability (probabilities saturate). Positional embeddings are
    not attributed. For integrated gradients the result's `delta` is the completeness gap
    ``scores.sum() - (target - baseline_target)``, and `steps` the nodes used: `steps` first, then
    as many more as the adaptive rule needs for completeness, up to `max_steps` (see
    adaptive_integrated_gradients; ``quadrature="gauss_legendre"``: exactly `steps`). A gap of
    COMPLETENESS_TOLERANCE (1%) or more of ``target - baseline_target`` warns (MechlabWarning) with
    the figure and the remedy. `progress`: a bar of integrated gradients' nodes.
    """
    check_model(model)
    check_method(method)
    check_steps(steps, max_steps, quadrature)
    baseline_token(model, baseline)
    if layer is not None:
        check_layer(model, layer)
    target = prepare(model, prompt, answer, wrong)
    return run_method(
        target,
        method,
        layer=layer,
        steps=steps,
        baseline=baseline,
        prompt=prompt,
        max_steps=max_steps,
        quadrature=quadrature,
        progress=progress,
    )


def prepare(
    model: HookedTransformer, prompt: PromptOrTokens, answer: str | int, wrong: str | int | None
) -> Target:
    tokens = one_prompt(model, prompt, "token attribution")
    return Target(model, tokens, *answer_ids(model, answer, wrong))


def run_method(
    target: Target,
    method: str | Callable,
    *,
    layer: int | None,
    steps: int,
    baseline: str,
    prompt: PromptOrTokens,
    max_steps: int = ATTRIBUTION_STEP_BUDGET,
    quadrature: str = "adaptive",
    progress: bool = False,
) -> TokenAttribution:
    model, tokens = target.model, target.tokens
    pos = tokens.shape[1]
    base = target.baseline(baseline) if method in BASELINE_METHODS else None
    own_target = target.values(target.embed.unsqueeze(0), 1)[0].item()
    baseline_target = delta = used_steps = used_layer = None
    if callable(method):  # a planted method, for the tests of the checks
        scores = torch.as_tensor(method(model, tokens)).double()
    elif method in ("saliency", "gradient_x_input"):
        _, grad, _ = gradients(target, target.embed.unsqueeze(0))
        grad = grad[0].double()
        if method == "saliency":
            scores = grad.norm(dim=-1)
        else:
            scores = (grad * target.embed.double()).sum(-1)
    elif method == "integrated_gradients":
        base = cast(Tensor, base)  # integrated gradients is a BASELINE_METHOD
        if quadrature == "gauss_legendre":
            chunk = chunk_size(model, pos, grad=True, limit=steps)
            scores, baseline_target = integrated_gradients(target, base, steps, chunk)
            used_steps = steps
        else:
            chunk = chunk_size(model, pos, grad=True, limit=max(steps, 2 * PANEL_NODES))
            path = EmbeddingPath(target, base, chunk)
            scores, baseline_target, used_steps = adaptive_integrated_gradients(
                path, steps, max_steps, progress=progress
            )
        delta = scores.sum().item() - (own_target - baseline_target)
    elif method == "layer_gradient_x_activation":
        used_layer = check_layer(model, layer)
        hook = f"blocks.{used_layer}.hook_resid_pre"
        _, _, [(activation, grad)] = gradients(target, target.embed.unsqueeze(0), [hook])
        scores = (activation[0].double() * grad[0].double()).sum(-1)
    elif method == "attention_rollout":
        hooks = [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)]
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in hooks)
        scores = rollout([cache[n][0].mean(0) for n in hooks], residual="half")[-1]
    elif method == "attention_x_gradient":
        hooks = [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)]
        _, _, pairs = gradients(target, target.embed.unsqueeze(0), hooks)
        layers = [(a[0].double() * g[0].double()).clamp(min=0).mean(0) for a, g in pairs]
        relevance = rollout(layers, residual="add")
        scores = relevance[-1] - torch.eye(pos, dtype=torch.float64)[-1]
    else:  # occlusion
        chunk = chunk_size(model, pos, grad=False, limit=pos)
        base = cast(Tensor, base)  # occlusion is a BASELINE_METHOD
        scores = occlusion(target, base, chunk)
        baseline_target = target.values(base.unsqueeze(0), 1)[0].item()
    names = token_strings(model, target.ids)
    result = TokenAttribution(
        model=model.cfg.model_name,
        prompt=prompt if isinstance(prompt, str) else "".join(token_strings(model, tokens[0])),
        answer=names[0],
        wrong=names[1] if len(names) > 1 else None,
        tokens=token_strings(model, tokens[0]),
        scores=scores.detach().cpu().float(),
        method=getattr(method, "__name__", "custom") if callable(method) else method,
        target=own_target,
        baseline_target=baseline_target,
        delta=delta,
        steps=used_steps,
        baseline=baseline,
        layer=used_layer,
        kept_bos=target.kept_bos,
        max_steps=None if used_steps is None or quadrature != "adaptive" else max_steps,
        quadrature=None if used_steps is None else quadrature,
    )
    if result.relative_delta is not None and not result.relative_delta < COMPLETENESS_TOLERANCE:
        remedy = (
            f"the adaptive rule used its whole budget: raise max_steps (--max-steps) above "
            f"{max_steps}"
            if quadrature == "adaptive"
            else "use quadrature='adaptive', which places nodes where the target changes"
        )
        warnings.warn(
            MechlabWarning(
                f"integrated gradients on {result.model} miss completeness by "
                f"{result.relative_delta:.1%} at {used_steps} steps (delta {delta:+.3g} of "
                f"{own_target - (baseline_target or 0.0):+.3g}): {remedy}"
            ),
            stacklevel=3,
        )
    return result

"""Sanity checks of token attribution: does an attribution depend on the model at all (the
model-parameter randomization test, Adebayo et al. 2018), and does it find the tokens that matter
(faithfulness: remove or keep the top-ranked tokens and watch the target)."""

import copy
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int, Real
from torch import Tensor
from transformer_lens import HookedTransformer

from mechlab.analysis.attribution.methods import (
    TokenAttribution,
    check_method,
    check_steps,
    prepare,
    run_method,
)
from mechlab.analysis.attribution.target import Target, chunk_size
from mechlab.analysis.tokens import (
    PromptOrTokens,
    check_model,
)
from mechlab.checks import check_seed
from mechlab.defaults import (
    ATTRIBUTION_STEP_BUDGET,
)
from mechlab.errors import InputError, MechlabWarning

RANDOMIZATION_THRESHOLD = 0.3  # randomization_check: a method passes below this rank correlation
FRACTIONS = (0.01, 0.05, 0.1, 0.2, 0.5)  # faithfulness: shares of the tokens removed or kept

# --------------------------------------------------------------------------------------------------
# Sanity checks: does the attribution depend on the model (randomization), and does it find the
# tokens the model needs (faithfulness)?


def spearman(a: Real[Tensor, " n"], b: Real[Tensor, " n"]) -> float:
    """Spearman's rank correlation (ties share their mean rank); NaN when either is constant."""

    def ranks(x: Tensor) -> Tensor:
        x = x.double()
        order = x.argsort()
        rank = torch.empty_like(x)
        rank[order] = torch.arange(len(x), dtype=torch.float64)
        for value in x.unique():  # mean rank of ties
            tied = x == value
            rank[tied] = rank[tied].mean()
        return rank

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = (ra.norm() * rb.norm()).item()
    return float("nan") if denominator == 0 else (ra @ rb).item() / denominator


def reinitialise(module: torch.nn.Module, cfg, generator: torch.Generator) -> None:
    """Draw `module`'s parameters again as TransformerLens initialises a model of this config:
    weight matrices (``W_*``) from N(0, initializer_range), biases 0, norm weights 1."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            leaf = name.split(".")[-1].lstrip("_")
            if leaf.startswith("W_"):
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.copy_(noise * cfg.initializer_range)
            elif leaf.startswith("b"):
                param.zero_()
            elif leaf == "w":
                param.fill_(1.0)


@dataclass
class RandomizationCheck:
    """Adebayo et al.'s cascading model-parameter randomization: the weights are re-initialised from
    the top (unembedding, then each block from the last down, then the embeddings), the attribution
    recomputed at each stage, and compared with the trained model's by the Spearman rank
    correlation of |scores|. An attribution that explains the *model* loses its ranking once the
    weights above the embeddings are random: `passes` when that correlation is below `threshold`.
    Methods that multiply by the input (gradient x input, integrated gradients) are expected to keep
    some of the input's structure until the embeddings themselves are randomized (Kokhlikyan et al.
    2021 found the same)."""

    model: str
    prompt: str
    method: str
    stages: list[str]  # "trained", "unembed", "L<i>" (every block from i up random), "embed"
    correlations: list[float]  # per stage, with the trained model's |scores|
    attributions: list[TokenAttribution] = field(repr=False)
    threshold: float = RANDOMIZATION_THRESHOLD
    seed: int = 0

    @property
    def above_embeddings(self) -> float:
        """The correlation when everything above the embeddings is random (the verdict's)."""
        return self.correlations[self.stages.index("embed") - 1]

    @property
    def passes(self) -> bool:
        return self.above_embeddings < self.threshold

    def __repr__(self) -> str:
        verdict = "passes" if self.passes else "FAILS"
        return (
            f"RandomizationCheck({self.model}, {self.method}: rank correlation with the trained "
            f"model {self.above_embeddings:+.2f} once every block is random, {verdict} "
            f"(threshold {self.threshold}); {len(self.stages)} stages)"
        )

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "method": self.method,
            "stages": self.stages,
            "correlations": self.correlations,
            "above_embeddings": self.above_embeddings,
            "threshold": self.threshold,
            "passes": self.passes,
            "seed": self.seed,
        }


def randomization_check(
    model: HookedTransformer,
    prompt: PromptOrTokens,
    *,
    answer: str | int,
    method: str | Callable = "integrated_gradients",
    wrong: str | int | None = None,
    layer: int | None = None,
    steps: int = 64,
    baseline: str = "zero",
    seed: int = 0,
    every: int = 1,
    progress: bool = False,
    max_steps: int = ATTRIBUTION_STEP_BUDGET,
    quadrature: str = "adaptive",
) -> RandomizationCheck:
    """Cascading randomization (see RandomizationCheck) on a copy of `model` (the model itself is
    untouched): stage "unembed" re-initialises the final norm and the unembedding, then each stage
    re-initialises `every` more blocks from the last down, and "embed" the embeddings. `method` is
    one of METHODS, or a function ``(model, tokens) -> [pos] scores`` (to test the check itself).
    `seed` draws the new weights. Integrated gradients are refined (up to `max_steps`) for the
    trained model only: a random model's need not be complete, and its ranking is all the check
    compares."""
    check_model(model)
    if not callable(method):
        check_method(method)
    check_steps(steps, max_steps, quadrature)
    check_seed(seed)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise InputError(f"every must be a whole number of blocks, at least 1, got {every!r}")
    prepare(model, prompt, answer, wrong)  # bad input fails before the model is copied
    copied = copy.deepcopy(model, memo={id(model.tokenizer): model.tokenizer})
    generator = torch.Generator().manual_seed(seed)
    n_layers = model.cfg.n_layers
    stages: list[tuple[str, list[torch.nn.Module]]] = [("trained", [])]
    stages.append(("unembed", [m for m in (copied.ln_final, copied.unembed) if m is not None]))
    for top in range(n_layers - 1, -1, -every):
        low = max(0, top - every + 1)
        stages.append((f"L{low}", [copied.blocks[i] for i in range(low, top + 1)]))
    embeddings: list[torch.nn.Module] = [copied.embed]
    if hasattr(copied, "pos_embed"):
        embeddings.append(copied.pos_embed)
    stages.append(("embed", embeddings))
    results = []
    bar = None
    if progress:
        from mechlab.progress import progress_bar

        bar = progress_bar(total=len(stages), desc=f"randomizing {model.cfg.model_name}")
    try:
        for name, modules in stages:
            for module in modules:
                reinitialise(module, copied.cfg, generator)
            with warnings.catch_warnings():  # a random model's IG need not be complete
                warnings.simplefilter("ignore", MechlabWarning)
                target = prepare(copied, prompt, answer, wrong)
                results.append(
                    run_method(
                        target,
                        method,
                        layer=layer,
                        steps=steps,
                        baseline=baseline,
                        prompt=prompt,
                        max_steps=max_steps if name == "trained" else steps,
                        quadrature=quadrature,
                    )
                )
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    trained = results[0].ranked.abs()
    correlations = [spearman(trained, r.ranked.abs()) for r in results]
    return RandomizationCheck(
        model=model.cfg.model_name,
        prompt=results[0].prompt,
        method=results[0].method,
        stages=[name for name, _ in stages],
        correlations=correlations,
        attributions=results,
        seed=seed,
    )


def bootstrap_interval(
    values: Float[Tensor, " sample"], generator: torch.Generator, samples: int = 2000
) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean of `values` (resampled with
    replacement)."""
    values = values.double()
    picks = torch.randint(len(values), (samples, len(values)), generator=generator)
    means = values[picks].mean(1)
    return means.quantile(0.025).item(), means.quantile(0.975).item()


@dataclass
class Faithfulness:
    """ERASER's comprehensiveness and sufficiency (DeYoung et al. 2020), with the model's logit
    (difference) as the score: for each share q of `fractions`, the top-k tokens of the ranking
    (k = ceil(q n), at least 1) are replaced by the baseline (positions do not shift; a kept BOS
    stays). Comprehensiveness = target - target with the top-k removed (higher: the ranking found
    tokens the model needs); sufficiency = target - target with only the top-k kept (lower: they
    are enough). Each is averaged over the shares (AOPC) per prompt, then over prompts, with a 95%
    bootstrap interval; the same for random rankings is the reference."""

    model: str
    method: str
    baseline: str
    fractions: tuple[float, ...]
    comprehensiveness: Float[Tensor, " prompt"]  # per prompt AOPC, logits
    sufficiency: Float[Tensor, " prompt"]
    random_comprehensiveness: Float[Tensor, " prompt"]  # mean over the random rankings
    random_sufficiency: Float[Tensor, " prompt"]
    intervals: dict[str, tuple[float, float]]
    seconds: float  # attribution time per prompt

    def summary(self) -> dict[str, float]:
        return {
            "comprehensiveness": self.comprehensiveness.mean().item(),
            "sufficiency": self.sufficiency.mean().item(),
            "random_comprehensiveness": self.random_comprehensiveness.mean().item(),
            "random_sufficiency": self.random_sufficiency.mean().item(),
        }

    def __repr__(self) -> str:
        s, n = self.summary(), len(self.comprehensiveness)
        return (
            f"Faithfulness({self.model}, {self.method}, {n} prompt{'s' * (n != 1)}: "
            f"comprehensiveness {s['comprehensiveness']:.2f} (random "
            f"{s['random_comprehensiveness']:.2f}), sufficiency {s['sufficiency']:.2f} (random "
            f"{s['random_sufficiency']:.2f}))"
        )

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "method": self.method,
            "baseline": self.baseline,
            "fractions": list(self.fractions),
            "prompts": len(self.comprehensiveness),
            **self.summary(),
            "intervals": {key: list(value) for key, value in self.intervals.items()},
            "per_prompt": {
                "comprehensiveness": self.comprehensiveness.tolist(),
                "sufficiency": self.sufficiency.tolist(),
                "random_comprehensiveness": self.random_comprehensiveness.tolist(),
                "random_sufficiency": self.random_sufficiency.tolist(),
            },
            "seconds_per_prompt": self.seconds,
        }


def erased(
    target: Target,
    base: Float[Tensor, "pos d_model"],
    order: Int[Tensor, " ranked"],
    fractions: Sequence[float],
) -> Float[Tensor, "2 fraction"]:
    """For each share: the target with the top-k of `order` removed, and with only they kept
    (``[2, len(fractions)]``). `order` indexes the ranked positions, best first."""
    first = 1 if target.kept_bos else 0
    n = len(target.embed) - first
    batch = []
    for keep_only in (False, True):
        for q in fractions:
            chosen = torch.zeros(len(target.embed), dtype=torch.bool)
            chosen[order[: max(1, math.ceil(q * n))] + first] = True
            replaced = ~chosen if keep_only else chosen
            replaced[:first] = False  # a kept BOS is never replaced
            batch.append(torch.where(replaced[:, None], base, target.embed))
    chunk = chunk_size(target.model, len(target.embed), grad=False, limit=len(batch))
    return target.values(torch.stack(batch), chunk).double().cpu().view(2, len(fractions))


def faithfulness(
    model: HookedTransformer,
    prompts: Sequence[PromptOrTokens],
    *,
    answers: Sequence[str | int],
    wrongs: Sequence[str | int | None] | None = None,
    method: str = "integrated_gradients",
    layer: int | None = None,
    steps: int = 64,
    baseline: str = "zero",
    fractions: Sequence[float] = FRACTIONS,
    random_rankings: int = 10,
    seed: int = 0,
    progress: bool = False,
    max_steps: int = ATTRIBUTION_STEP_BUDGET,
    quadrature: str = "adaptive",
) -> Faithfulness:
    """Comprehensiveness and sufficiency of `method` over `prompts` (see Faithfulness), against
    `random_rankings` random rankings per prompt (seeded), removed tokens replaced by
    `baseline` (``"zero"`` by default; a token embedding if given)."""
    check_model(model)
    check_method(method)
    check_steps(steps, max_steps, quadrature)
    wrongs = [None] * len(prompts) if wrongs is None else list(wrongs)
    if not len(prompts) == len(answers) == len(wrongs) or not prompts:
        raise InputError(
            f"faithfulness needs one answer (and wrong answer, if any) per prompt: got "
            f"{len(prompts)} prompts, {len(answers)} answers, {len(wrongs)} wrong answers"
        )
    if not fractions or not all(0 < q <= 1 for q in fractions):
        raise InputError(f"fractions must be shares in (0, 1], got {list(fractions)!r}")
    generator = torch.Generator().manual_seed(seed)
    comp, suff, rand_comp, rand_suff, seconds = [], [], [], [], 0.0
    items = zip(prompts, answers, wrongs, strict=True)
    if progress:
        from mechlab.progress import progress_bar

        items = progress_bar(items, total=len(prompts), desc=f"faithfulness of {method}")
    for prompt, answer, wrong in items:
        target = prepare(model, prompt, answer, wrong)
        start = time.perf_counter()
        result = run_method(
            target,
            method,
            layer=layer,
            steps=steps,
            baseline=baseline,
            prompt=prompt,
            max_steps=max_steps,
            quadrature=quadrature,
        )
        seconds += time.perf_counter() - start
        base = target.baseline(baseline)
        order = result.ranked.argsort(descending=True)
        removed, kept = result.target - erased(target, base, order, fractions)
        comp.append(removed.mean())
        suff.append(kept.mean())
        randoms = [
            result.target
            - erased(target, base, torch.randperm(len(order), generator=generator), fractions)
            for _ in range(random_rankings)
        ]
        rand_comp.append(torch.stack([r[0].mean() for r in randoms]).mean())
        rand_suff.append(torch.stack([r[1].mean() for r in randoms]).mean())
    values = {
        "comprehensiveness": torch.stack(comp).float(),
        "sufficiency": torch.stack(suff).float(),
        "random_comprehensiveness": torch.stack(rand_comp).float(),
        "random_sufficiency": torch.stack(rand_suff).float(),
    }
    intervals = {key: bootstrap_interval(value, generator) for key, value in values.items()}
    intervals["comprehensiveness_minus_random"] = bootstrap_interval(
        values["comprehensiveness"] - values["random_comprehensiveness"], generator
    )
    intervals["sufficiency_minus_random"] = bootstrap_interval(
        values["sufficiency"] - values["random_sufficiency"], generator
    )
    return Faithfulness(
        model=model.cfg.model_name,
        method=method,
        baseline=baseline,
        fractions=tuple(fractions),
        intervals=intervals,
        seconds=seconds / len(prompts),
        **values,
    )

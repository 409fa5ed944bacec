# %% [markdown]
# # Token attribution: which tokens of the prompt made the model say " Paris"?
# GradCAM answers this question for images: weight a layer's activations by the gradient of the
# class score, and see which pixels light up. For a transformer the inputs are tokens, and there
# are several answers: the gradient at the input embeddings (saliency, gradient x input), its
# integral along a path from a baseline (integrated gradients), the GradCAM analogue on the
# residual stream (layer gradient x activation), the attention itself (rollout, attention x
# gradient), and the slow, direct one: replace each token and watch the logit (occlusion).
#
# The target is always a logit (or a logit difference), never a probability: a probability near 1
# saturates, and every token then looks unimportant. Then two checks say whether a map means
# anything: does it change when the weights are random (Adebayo et al. 2018), and does deleting
# its top tokens hurt the answer more than deleting random ones (DeYoung et al. 2020)?

# %%
from _common import parse

from mechlab import attribute, faithfulness, load_model, randomization_check
from mechlab.analysis.attribution import attribution_prompts
from mechlab.defaults import ATTRIBUTION_METHODS
from mechlab.io import ensure_writable_dir, save_figure, write_json
from mechlab.present.attribution import attribution_json, plot_attribution, plot_randomization

args = parse(
    __doc__ or "token attribution",
    prompt=(str, "The capital of France is", "the prompt"),
    answer=(str, " Paris", "the answer (one token)"),
    wrong=(str, None, "a wrong answer: attribute the logit difference"),
    baseline=(str, " the", "integrated gradients' and occlusion's baseline token (or zero)"),
    every=(int, 10, "blocks re-drawn per stage of the randomization check", 30),
    max_steps=(int, 4096, "integrated gradients' budget of quadrature nodes", 128),
    prompts=(int, 20, "prompts of the set for faithfulness (0: the prompt above only)", 0),
)
out = ensure_writable_dir(args.out)
model = load_model(args.model[0])

# %% [markdown]
# ## Every method on one prompt
# Each row is one method's scores, scaled to its own largest |score| (the methods have different
# units). Positional embeddings are not attributed: only the token embeddings are.

# %%
target = dict(answer=args.answer, wrong=args.wrong)
results = [
    attribute(
        model,
        args.prompt,
        method=method,
        baseline=args.baseline,
        max_steps=args.max_steps,
        **target,
    )
    for method in ATTRIBUTION_METHODS
]
for result in results:
    print(result)
save_figure(plot_attribution(results), out / "attribution.png")
results[0]  # in a notebook: the tokens coloured by score

# %% [markdown]
# ## Integrated gradients must add up
# Completeness: the scores sum to the target minus the target at the baseline. `delta` is the gap.
# Along the path the target of a normed model is flat in places and moves by whole logits within
# a few thousandths of the path in others (from the zero embedding: where the scaled embeddings
# fall below the norm's epsilon). One Gauss-Legendre rule of 64 nodes (Captum's default) misses
# those spots; the adaptive rule halves the pieces of the path whose integral disagrees with the
# target's change across them, until the sum is complete or its budget is spent (mechlab warns
# above 1%). From the zero embedding it needs about 1,600 nodes on SmolLM2, from ' the' about 150.

# %%
for baseline in ("zero", args.baseline):
    for quadrature in ("gauss_legendre", "adaptive"):
        integral = attribute(
            model, args.prompt, baseline=baseline, quadrature=quadrature,
            max_steps=args.max_steps, **target,
        )  # fmt: skip
        print(
            f"baseline {baseline!r}, {quadrature}: {integral.steps} nodes, delta "
            f"{integral.delta:+.4f} ({integral.relative_delta:.1%} of the difference)"
        )

# %% [markdown]
# ## The sanity check: randomize the model, from the top down
# A map that stays the same while the weights are re-drawn explains the input, not the model.
# Occlusion should lose its map; attention rollout, which has no target and keeps the residual
# identity in every layer, is the one to watch.

# %%
checks = [
    randomization_check(
        model, args.prompt, method=method, baseline=args.baseline, every=args.every, **target
    )
    for method in ("saliency", "attention_rollout", "occlusion")
]
for check in checks:
    print(check)
save_figure(plot_randomization(checks), out / "randomization.png")

# %% [markdown]
# ## Faithfulness over a prompt set
# Comprehensiveness: how far the target falls when the top-scored tokens are removed (higher is
# better); sufficiency: how far it falls when only they are kept (lower is better); each against
# removing as many random tokens.

# %%
if args.prompts:
    chosen = attribution_prompts()[: args.prompts]
    prompts = [row["prompt"] for row in chosen]
    answers, wrongs = [row["answer"] for row in chosen], [row["wrong"] for row in chosen]
else:
    prompts, answers, wrongs = [args.prompt], [args.answer], [args.wrong]
scores = {
    method: faithfulness(model, prompts, answers=answers, wrongs=wrongs, method=method)
    for method in ("occlusion", "saliency", "attention_rollout")
}
for result in scores.values():
    print(result)
write_json(
    out / "attribution.json",
    {
        **attribution_json(results, checks),
        "faithfulness": {method: result.to_json() for method, result in scores.items()},
    },
)

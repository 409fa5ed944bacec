"""Token attribution against references written independently: gradients by hand through
TransformerLens hooks on the full forward pass (all logits, not mechlab's shortcut), Captum's
IntegratedGradients on the same function and baseline, attention rollout computed by hand from the
cached patterns, occlusion by explicit forwards; and the sanity checks, each shown to fail on an
input made to fail."""

import itertools
import json
import math

import pytest
import torch
from conftest import build_hf_gemma3

from mechlab.analysis.attribution import (
    COMPLETENESS_TOLERANCE,
    METHODS,
    EmbeddingPath,
    adaptive_integrated_gradients,
    attribute,
    erased,
    faithfulness,
    gauss_legendre,
    integrate_panels,
    prepare,
    randomization_check,
    spearman,
)
from mechlab.cli import main
from mechlab.errors import InputError, MechlabWarning
from mechlab.models.loading import load_model

IOI = "When Mary and John went to the store, John gave a drink to"
PROMPTS = ["the cat sat on the", "hello world, hello", "abcdefgh abcdef", "once upon a time"]


@pytest.fixture(scope="module", params=["random:tiny", "random:llama-tiny", "gemma3"])
def small(request, tmp_path_factory):
    """A GPT-2-shaped (learned positions, LayerNorm, biases), a Llama-shaped (RMSNorm, rotary,
    grouped-query) and a Gemma-3-shaped (norms after each sublayer too, sliding windows) model."""
    spec = request.param
    if spec == "gemma3":
        spec = str(build_hf_gemma3(tmp_path_factory.mktemp("hf-gemma3"), initializer_range=0.2))
    return load_model(spec)


def hooked_target(model, tokens, answer: int, wrong: int | None):
    """The reference target: the full forward pass's logits (every row of the unembedding, the
    soft cap if any), with the token embeddings replaced by `embed`."""

    def target(embed):
        logits = model.run_with_hooks(
            tokens.expand(embed.shape[0], -1), fwd_hooks=[("hook_embed", lambda v, hook: embed)]
        )
        last = logits[:, -1]
        return last[:, answer] - (0 if wrong is None else last[:, wrong])

    return target


def token_embeddings(model, tokens):
    _, cache = model.run_with_cache(tokens, names_filter="hook_embed")
    return cache["hook_embed"]


def test_the_target_is_the_models_own_logit_difference(small):
    tokens = small.to_tokens("abcdef")
    target = prepare(small, "abcdef", "a", "b")
    logits = small(tokens)
    own = (logits[0, -1, ord("a")] - logits[0, -1, ord("b")]).item()
    assert target.values(target.embed[None], 1).item() == pytest.approx(own, rel=1e-5, abs=1e-5)
    result = attribute(small, "abcdef", answer="a", wrong="b", method="saliency")
    assert result.target == pytest.approx(own, rel=1e-5, abs=1e-5)


def test_saliency_and_gradient_x_input_match_hand_written_gradients(small):
    tokens = small.to_tokens("hello there")
    embed = token_embeddings(small, tokens).detach().requires_grad_(True)
    value = hooked_target(small, tokens, ord("!"), ord("?"))(embed)
    (grad,) = torch.autograd.grad(value.sum(), embed)
    saliency = attribute(small, "hello there", answer="!", wrong="?", method="saliency")
    gxi = attribute(small, "hello there", answer="!", wrong="?", method="gradient_x_input")
    torch.testing.assert_close(saliency.scores, grad[0].norm(dim=-1), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gxi.scores, (grad[0] * embed[0]).sum(-1), rtol=1e-4, atol=1e-6)


def test_layer_gradient_x_activation_matches_hand_written_hooks(small):
    tokens = small.to_tokens("hello there")
    kept = {}

    def keep(value, hook):
        value.retain_grad()
        kept["resid"] = value
        return value

    embed = token_embeddings(small, tokens).detach().requires_grad_(True)
    logits = small.run_with_hooks(
        tokens,
        fwd_hooks=[("hook_embed", lambda v, hook: embed), ("blocks.1.hook_resid_pre", keep)],
    )
    logits[0, -1, ord("!")].backward()
    expected = (kept["resid"].grad[0] * kept["resid"][0]).sum(-1)
    result = attribute(
        small, "hello there", answer="!", method="layer_gradient_x_activation", layer=1
    )
    assert result.layer == 1
    torch.testing.assert_close(result.scores, expected.detach(), rtol=1e-4, atol=1e-6)


IGNORE_INCOMPLETE = pytest.mark.filterwarnings("ignore::mechlab.errors.MechlabWarning")


def captum_integrated_gradients(model, prompt, baseline, steps, edges=(0.0, 1.0)):
    """Captum's IntegratedGradients of logit('!') - logit('?'), on the reference target, per
    token, and its convergence delta: one Gauss-Legendre rule of `steps` nodes over each piece
    [a, b] of the path between `edges`, run as Captum's integral from the point at a to the point
    at b (the pieces' integrals add up to the whole path's)."""
    captum = pytest.importorskip("captum.attr")
    tokens = model.to_tokens(prompt)
    embed = token_embeddings(model, tokens).detach()
    base = (
        torch.zeros_like(embed)
        if baseline == "zero"
        else token_embeddings(model, torch.full_like(tokens, ord(baseline))).detach()
    )
    base[:, 0] = embed[:, 0]  # the BOS is kept
    ig = captum.IntegratedGradients(hooked_target(model, tokens, ord("!"), ord("?")))
    total, delta = 0.0, 0.0
    for a, b in itertools.pairwise(edges):
        piece, piece_delta = ig.attribute(
            base + b * (embed - base),
            baselines=base + a * (embed - base),
            n_steps=steps,
            method="gausslegendre",
            internal_batch_size=min(steps, 64),
            return_convergence_delta=True,
        )
        total, delta = total + piece[0].sum(-1), delta + piece_delta.item()
    return total, delta


# A dense reference mesh: pieces shrinking geometrically towards the baseline (where the target of
# a normed model changes fastest) and even ones beyond.
DENSE_EDGES = (0.0, *torch.logspace(-7, -1, 13).tolist()[:-1], *torch.linspace(0.1, 1, 19).tolist())


@pytest.mark.numerics
@IGNORE_INCOMPLETE
@pytest.mark.parametrize("baseline", ["zero", "a"])
def test_integrated_gradients_match_captum(small, baseline):
    """The same rule (one Gauss-Legendre rule of 32 nodes) gives the same scores and delta."""
    prompt, steps = "hello there", 32
    reference, delta = captum_integrated_gradients(small, prompt, baseline, steps)
    result = attribute(
        small, prompt, answer="!", wrong="?", steps=steps, baseline=baseline,
        quadrature="gauss_legendre",
    )  # fmt: skip
    scale = reference.abs().max().item()
    assert result.steps == steps and result.quadrature == "gauss_legendre"
    assert (result.scores - reference).abs().max().item() <= 1e-4 * scale
    assert result.delta == pytest.approx(delta, abs=1e-4 * scale)


@pytest.mark.numerics
@pytest.mark.parametrize("baseline", ["zero", "a"])
def test_adaptive_integrated_gradients_match_captum_at_many_nodes(small, baseline):
    """The adaptive rule converges to the path integral itself: Captum's 64-node rule on each of
    the 30 pieces of DENSE_EDGES is a dense reference (its own delta is far below the
    tolerance). Except from the zero embedding of the Gemma-3-shaped model (initialised at 0.2),
    whose path no fixed rule tried resolves: one rule's delta swings from -0.35 at 1,024 nodes to
    +2.5 at 2,048 (of a difference of 7), the dense mesh's is 1.35 of 12; there the adaptive
    rule's own completeness is what is checked."""
    prompt = "hello there"
    reference, delta = captum_integrated_gradients(small, prompt, baseline, 64, DENSE_EDGES)
    result = attribute(small, prompt, answer="!", wrong="?", baseline=baseline)
    scale = reference.abs().max().item()
    if small.cfg.original_architecture == "Gemma3ForCausalLM" and baseline == "zero":
        assert abs(delta) > 0.05 * scale  # no dense reference here (see above)
        assert result.relative_delta < COMPLETENESS_TOLERANCE
        return
    assert abs(delta) < 1e-4 * scale
    assert result.quadrature == "adaptive" and result.steps <= result.max_steps
    assert (result.scores - reference).abs().max().item() <= 1e-3 * scale
    assert result.relative_delta < COMPLETENESS_TOLERANCE


class SharpPath(EmbeddingPath):
    """A path integral known in closed form, shaped like SmolLM2's from the zero embedding: the
    target is flat almost everywhere and jumps within a few ten-thousandths of the path (token 0:
    up, token 1: down by almost as much, so their sum hides most of each; token 2: a gentle
    ramp). Its integrand per token is the derivative of ``c tanh((alpha - at) / width)``."""

    at, width = 0.0037, 2e-4
    heights = torch.tensor([3.0, -2.9, 0.0], dtype=torch.float64)
    ramp = torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)

    def __init__(self):
        self.nodes = 0

    def values(self, alphas):
        return self.parts(alphas).sum(-1)

    def parts(self, alphas):
        step = torch.tanh((alphas[:, None] - self.at) / self.width)
        return self.heights * step + self.ramp * alphas[:, None]

    def integrand(self, alphas):
        self.nodes += len(alphas)
        slope = 1 / torch.cosh((alphas[:, None] - self.at) / self.width) ** 2 / self.width
        return self.heights * slope + self.ramp

    def exact(self):
        ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
        start, end = self.parts(ends)
        return end - start


def test_the_adaptive_rule_integrates_a_sharp_path_where_one_rule_misses_it():
    path = SharpPath()
    exact = path.exact()
    scores, baseline_value, used = adaptive_integrated_gradients(path, 64, 4096)
    assert used == path.nodes <= 4096
    assert baseline_value == pytest.approx(path.values(torch.zeros(1, dtype=torch.float64)).item())
    assert (scores - exact).abs().max().item() < 1e-3 * exact.abs().max().item()
    # one 64-node Gauss-Legendre rule over the whole path misses the jump
    nodes, weights = gauss_legendre(64)
    one_rule = (weights[:, None] * path.integrand(nodes)).sum(0)
    assert (one_rule - exact).abs().max().item() > 0.1 * exact.abs().max().item()


def test_the_adaptive_rule_is_not_fooled_by_errors_that_cancel_in_the_sum():
    """Tokens 0 and 1 jump by +3 and -3 at the same spot: the target (their sum, and the ramp)
    is smooth, so every panel's completeness gap is small from the start and the gap alone would
    stop at the first mesh with both tokens wrong; the disagreement of a panel's integral with its
    halves' catches them. (A jump narrower than the nodes' spacing whose parts cancel exactly is
    invisible to any quadrature: no node sees it and the sum does not move.)"""
    path = SharpPath()
    path.heights = torch.tensor([3.0, -3.0, 0.0], dtype=torch.float64)
    path.at, path.width = 0.3, 3e-3
    exact = path.exact()
    edges = torch.linspace(0, 1, 9, dtype=torch.float64).tolist()  # the first mesh at 64 steps
    values = dict(
        zip(edges, path.values(torch.tensor(edges, dtype=torch.float64)).tolist(), strict=True)
    )
    first = integrate_panels(path, list(itertools.pairwise(edges)), values)
    allowed = COMPLETENESS_TOLERANCE / 2 * abs(values[1.0] - values[0.0])
    assert sum(abs(panel.gap) for panel in first) < allowed  # the gap alone would stop here
    wrong = torch.stack([panel.scores for panel in first]).sum(0)
    assert (wrong - exact).abs().max().item() > 0.1
    scores, _, _ = adaptive_integrated_gradients(path, 64, 4096)
    assert (scores - exact).abs().max().item() < 1e-3 * exact.abs().max().item()


def test_the_adaptive_rule_stops_at_its_budget_and_says_so():
    path = SharpPath()
    _, _, used = adaptive_integrated_gradients(path, 64, 96)
    assert used <= 96 and path.nodes == used
    model = load_model("random:llama-tiny")
    with pytest.warns(MechlabWarning, match=r"at 4 steps .*raise max_steps \(--max-steps\)"):
        attribute(model, "the cat sat on the", answer="e", steps=4, max_steps=4)


def test_gauss_legendre_integrates_polynomials_exactly():
    nodes, weights = gauss_legendre(4)  # exact up to degree 7 on [0, 1]
    assert (weights * nodes**7).sum().item() == pytest.approx(1 / 8, rel=1e-12)
    assert weights.sum().item() == pytest.approx(1.0, rel=1e-12)


@pytest.mark.numerics
@pytest.mark.parametrize("spec", ["random:tiny", "random:llama-tiny"])
def test_integrated_gradients_are_complete_at_64_steps(spec):
    model = load_model(spec)
    gaps = []
    for prompt in PROMPTS:
        for baseline in ("zero", "a"):
            result = attribute(model, prompt, answer="e", wrong="t", baseline=baseline)
            gaps.append(result.relative_delta)
            assert result.delta == pytest.approx(
                result.scores.double().sum().item() - (result.target - result.baseline_target),
                abs=1e-5,
            )
    assert max(gaps) < COMPLETENESS_TOLERANCE, gaps


def test_an_incomplete_integral_warns_with_its_figure():
    model = load_model("random:llama-tiny")
    with pytest.warns(MechlabWarning, match=r"miss completeness by .*% at 1 steps.*adaptive"):
        attribute(model, "the cat sat on the", answer="e", steps=1, quadrature="gauss_legendre")


def test_attention_rollout_matches_a_hand_computation():
    model = load_model("random:tiny")  # two layers
    tokens = model.to_tokens("abcde")
    _, cache = model.run_with_cache(tokens)
    pos = tokens.shape[1]
    product = torch.eye(pos, dtype=torch.float64)
    for layer in range(2):
        a = cache[f"blocks.{layer}.attn.hook_pattern"][0].double().mean(0)
        mixed = 0.5 * a + 0.5 * torch.eye(pos, dtype=torch.float64)
        product = mixed @ product  # rows of mixed already sum to 1
    result = attribute(model, "abcde", answer="f", method="attention_rollout")
    torch.testing.assert_close(result.scores.double(), product[-1], rtol=1e-5, atol=1e-7)
    assert result.scores.sum().item() == pytest.approx(1.0, abs=1e-5)  # a distribution


def test_attention_x_gradient_matches_a_hand_computation():
    model = load_model("random:tiny")
    tokens = model.to_tokens("abcde")
    patterns = {}

    def keep(value, hook):
        value.retain_grad()
        patterns[hook.layer()] = value
        return value

    logits = model.run_with_hooks(
        tokens, fwd_hooks=[(lambda name: name.endswith("hook_pattern"), keep)]
    )
    logits[0, -1, ord("f")].backward()
    pos = tokens.shape[1]
    relevance = torch.eye(pos, dtype=torch.float64)
    for layer in range(2):
        a = patterns[layer]
        mean = (a.grad[0] * a[0]).double().clamp(min=0).mean(0)
        relevance = relevance + mean @ relevance
    expected = relevance[-1] - torch.eye(pos, dtype=torch.float64)[-1]
    result = attribute(model, "abcde", answer="f", method="attention_x_gradient")
    torch.testing.assert_close(result.scores.double(), expected.detach(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("baseline", ["zero", "a"])
def test_occlusion_matches_explicit_forwards(small, baseline):
    prompt = "hello there"
    tokens = small.to_tokens(prompt)
    embed = token_embeddings(small, tokens).detach()
    base = (
        torch.zeros_like(embed)
        if baseline == "zero"
        else token_embeddings(small, torch.full_like(tokens, ord(baseline))).detach()
    )
    target = hooked_target(small, tokens, ord("!"), None)
    own = target(embed).item()
    expected = [0.0]  # the BOS is kept
    for position in range(1, tokens.shape[1]):
        occluded = embed.clone()
        occluded[0, position] = base[0, position]
        expected.append(own - target(occluded).item())
    result = attribute(small, prompt, answer="!", method="occlusion", baseline=baseline)
    torch.testing.assert_close(
        result.scores.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-4, atol=1e-5
    )


def test_removing_the_top_token_is_its_occlusion():
    """Comprehensiveness at k = 1 removes the top-ranked token: exactly what occlusion measures."""
    model = load_model("random:llama-tiny")
    result = attribute(model, "the cat sat", answer="e", method="occlusion")
    target = prepare(model, "the cat sat", "e", None)
    order = result.ranked.argsort(descending=True)
    removed, kept = erased(target, target.baseline("zero"), order, [1e-9, 1.0])
    assert result.target - removed[0].item() == pytest.approx(result.ranked.max().item(), abs=1e-5)
    assert kept[1].item() == pytest.approx(result.target, abs=1e-5)  # keeping all changes nothing


def test_spearman_against_hand_values():
    assert spearman(
        torch.tensor([1.0, 2, 3, 4]), torch.tensor([10.0, 20, 30, 40])
    ) == pytest.approx(1)
    assert spearman(torch.tensor([1.0, 2, 3]), torch.tensor([3.0, 2, 1])) == pytest.approx(-1.0)
    # ties share their mean rank: ranks (0, 1.5, 1.5) and (0, 1, 2) give 0.866...
    value = spearman(torch.tensor([1.0, 2, 2]), torch.tensor([1.0, 2, 3]))
    assert value == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman(torch.ones(3), torch.tensor([1.0, 2, 3])))


def embedding_norm(model, tokens):
    """A planted 'attribution' that depends only on the embeddings, never on the weights above."""
    return token_embeddings(model, tokens)[0].norm(dim=-1)


def test_the_randomization_check_fails_a_method_blind_to_the_model():
    model = load_model("random:llama-tiny")
    check = randomization_check(model, "the cat sat on the mat", answer="e", method=embedding_norm)
    assert check.stages == ["trained", "unembed", "L1", "L0", "embed"]
    assert check.correlations[:4] == pytest.approx([1.0] * 4)
    assert check.above_embeddings == pytest.approx(1.0) and not check.passes
    assert check.correlations[-1] < 0.9  # only re-drawing the embeddings changes it


def test_the_randomization_check_leaves_the_model_alone():
    model = load_model("random:tiny")
    before = {name: p.clone() for name, p in model.state_dict().items()}
    randomization_check(model, "the cat", answer="e", method="saliency")
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_bad_input_is_a_clear_error():
    model = load_model("random:tiny")
    with pytest.raises(InputError, match="unknown attribution method 'gradcam'"):
        attribute(model, "abc", answer="a", method="gradcam")
    with pytest.raises(InputError, match="steps must be a whole number from 1 to 1024"):
        attribute(model, "abc", answer="a", steps=0)
    with pytest.raises(InputError, match=r"max_steps must be a whole number from steps \(64\)"):
        attribute(model, "abc", answer="a", max_steps=32)
    with pytest.raises(InputError, match="unknown quadrature 'simpson'"):
        attribute(model, "abc", answer="a", quadrature="simpson")
    with pytest.raises(InputError, match="layer 5 is out of range"):
        attribute(model, "abc", answer="a", method="layer_gradient_x_activation", layer=5)
    with pytest.raises(InputError, match="the same token"):
        attribute(model, "abc", answer="a", wrong="a")
    with pytest.raises(InputError, match="the prompt is empty"):
        attribute(model, "  ", answer="a")
    with pytest.raises(InputError, match=r"one answer .* per prompt"):
        faithfulness(model, ["abc", "abd"], answers=["a"])


@IGNORE_INCOMPLETE
def test_the_command_writes_every_method_and_the_curves(tmp_path, capsys):
    out = tmp_path / "out"
    hostile = "</script><b>x</b> \u202e\n"
    code = main(
        [
            "attribute", "--model", "random:tiny", "--prompt", hostile, "--answer", "a",
            "--wrong", "b", "--steps", "16", "--sanity", "--out", str(out),
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "integrated gradients' nodes" in err  # the adaptive rule's progress bar
    data = json.loads((out / "attribution.json").read_text())
    assert list(data["methods"]) == list(METHODS)
    assert list(data["randomization"]) == list(METHODS)
    integral = data["methods"]["integrated_gradients"]
    assert 16 <= integral["steps"] <= integral["max_steps"] == 4096
    assert integral["quadrature"] == "adaptive"
    assert {"tokens", "scores", "target", "baseline_target", "delta"} <= set(integral)
    page = (out / "attribution.html").read_text()
    assert "<b>x</b>" not in page and "&lt;/script&gt;&lt;b&gt;" in page
    for name in ("attribution.png", "randomization.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.numerics
@IGNORE_INCOMPLETE
def test_smollm2_puts_the_indirect_object_first(smollm2):
    """On the IOI prompt, occlusion and integrated gradients both put their largest positive score
    on ' Mary' (position 2, the indirect object), the name the model answers with. Integrated
    gradients by one 64-node rule (8.5% short of complete here, 4 s): the adaptive rule's complete
    sum from the zero embedding takes 1,872 nodes (96 s) and ranks ' Mary' first too."""
    for method in ("occlusion", "integrated_gradients"):
        result = attribute(
            smollm2, IOI, answer=" Mary", wrong=" John", method=method,
            quadrature="gauss_legendre",
        )  # fmt: skip
        position, token, score = result.top(1)[0]
        assert (position, token) == (2, " Mary") and score > 0, result


@pytest.mark.numerics
def test_smollm2_integrated_gradients_are_complete_where_one_rule_is_not(smollm2):
    """On this prompt one 64-node Gauss-Legendre rule from ' the' misses completeness by 14% (the
    target moves by whole logits over short stretches of the path), and says so; the adaptive
    rule adds nodes there until the sum is complete (368 nodes here, within the default budget)."""
    prompt = "Big Ben is in the city of"
    options = dict(answer=" London", wrong=" Paris", baseline=" the")
    with pytest.warns(MechlabWarning, match="miss completeness"):
        one_rule = attribute(smollm2, prompt, quadrature="gauss_legendre", **options)
    assert one_rule.relative_delta > 5 * COMPLETENESS_TOLERANCE
    adaptive = attribute(smollm2, prompt, **options)
    assert adaptive.relative_delta < COMPLETENESS_TOLERANCE
    assert 64 < adaptive.steps < adaptive.max_steps


@IGNORE_INCOMPLETE
def test_smollm2_occlusion_is_more_comprehensive_than_chance(smollm2):
    prompts = ["The capital of France is", IOI, "The Eiffel Tower is in the city of"]
    result = faithfulness(
        smollm2, prompts, answers=[" Paris", " Mary", " Paris"], method="occlusion"
    )
    low, _ = result.intervals["comprehensiveness_minus_random"]
    assert low > 0, result
    _, high = result.intervals["sufficiency_minus_random"]
    assert high < 0, result


def test_smollm2_randomization_flags_attention_rollout_and_passes_occlusion(smollm2):
    """Attention rollout (no target, the residual identity in every layer) keeps its map with every
    block of SmolLM2 re-drawn: the check fails it, as Adebayo et al.'s test is meant to. Occlusion,
    the reference, loses its map on the factual prompt once the blocks are random, and passes."""
    options = dict(every=10, baseline=" the")
    for prompt, answer in [("The capital of France is", " Paris"), (IOI, " Mary")]:
        rollout = randomization_check(
            smollm2, prompt, answer=answer, method="attention_rollout", **options
        )
        assert rollout.above_embeddings > 0.7 and not rollout.passes, rollout
    occlusion = randomization_check(
        smollm2, "The capital of France is", answer=" Paris", method="occlusion", **options
    )
    assert occlusion.passes and occlusion.above_embeddings < 0, occlusion

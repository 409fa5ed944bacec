"""Token attribution against references written independently: gradients by hand through
TransformerLens hooks on the full forward pass (all logits, not mechlab's shortcut), Captum's
IntegratedGradients on the same function and baseline, attention rollout computed by hand from the
cached patterns, occlusion by explicit forwards; and the sanity checks, each shown to fail on an
input made to fail."""

import json
import math

import pytest
import torch
from conftest import build_hf_gemma3

from mechlab.analysis.attribution import (
    COMPLETENESS_TOLERANCE,
    METHODS,
    attribute,
    erased,
    faithfulness,
    gauss_legendre,
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


@pytest.mark.numerics
@IGNORE_INCOMPLETE
@pytest.mark.parametrize("baseline", ["zero", "a"])
def test_integrated_gradients_match_captum(small, baseline):
    captum = pytest.importorskip("captum.attr")
    prompt, steps = "hello there", 32
    tokens = small.to_tokens(prompt)
    embed = token_embeddings(small, tokens).detach()
    base = (
        torch.zeros_like(embed)
        if baseline == "zero"
        else token_embeddings(small, torch.full_like(tokens, ord(baseline))).detach()
    )
    base[:, 0] = embed[:, 0]  # the BOS is kept
    ig = captum.IntegratedGradients(hooked_target(small, tokens, ord("!"), ord("?")))
    reference, delta = ig.attribute(
        embed,
        baselines=base,
        n_steps=steps,
        method="gausslegendre",
        internal_batch_size=steps,
        return_convergence_delta=True,
    )
    reference = reference[0].sum(-1)
    result = attribute(small, prompt, answer="!", wrong="?", steps=steps, baseline=baseline)
    scale = reference.abs().max().item()
    assert (result.scores - reference).abs().max().item() <= 1e-4 * scale
    assert result.delta == pytest.approx(delta.item(), abs=1e-4 * scale)


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
    with pytest.warns(MechlabWarning, match=r"miss completeness by .*% at 1 steps"):
        attribute(model, "the cat sat on the", answer="e", steps=1)


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
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "attribution.json").read_text())
    assert list(data["methods"]) == list(METHODS)
    assert list(data["randomization"]) == list(METHODS)
    assert data["methods"]["integrated_gradients"]["steps"] == 16
    assert {"tokens", "scores", "target", "baseline_target", "delta"} <= set(
        data["methods"]["integrated_gradients"]
    )
    page = (out / "attribution.html").read_text()
    assert "<b>x</b>" not in page and "&lt;/script&gt;&lt;b&gt;" in page
    for name in ("attribution.png", "randomization.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.numerics
@IGNORE_INCOMPLETE
def test_smollm2_puts_the_indirect_object_first(smollm2):
    """On the IOI prompt, occlusion and integrated gradients both put their largest positive score
    on ' Mary' (position 2, the indirect object), the name the model answers with."""
    for method in ("occlusion", "integrated_gradients"):
        result = attribute(smollm2, IOI, answer=" Mary", wrong=" John", method=method)
        position, token, score = result.top(1)[0]
        assert (position, token) == (2, " Mary") and score > 0, result


@pytest.mark.numerics
def test_smollm2_integrated_gradients_are_complete_on_a_smooth_path(smollm2):
    """From the ' the' baseline the path stays among real embeddings and 64 nodes are complete to
    well under 1%; from the zero baseline they are not (see the README's method table): the
    result says so rather than hiding it."""
    smooth = attribute(smollm2, IOI, answer=" Mary", wrong=" John", baseline=" the")
    assert smooth.relative_delta < COMPLETENESS_TOLERANCE
    with pytest.warns(MechlabWarning, match="miss completeness"):
        attribute(smollm2, IOI, answer=" Mary", wrong=" John")


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

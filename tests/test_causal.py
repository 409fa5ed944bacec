"""Causal checks (ablation, activation and attribution patching, direct logit attribution) against
references written independently: TransformerLens hooks written here by hand, TransformerLens's own
patching module and ActivationCache.logit_attrs, its own loss, and finite differences."""

import pytest
import torch
from conftest import build_hf_gemma3

from mechlab.analysis.ablation import Ablator, ablate_heads, ablation_study
from mechlab.analysis.dla import logit_attribution
from mechlab.analysis.heads import repeated_tokens, scan_heads
from mechlab.analysis.patching import LogitDiff, agreement, exact_grid, patch, run_with_cache
from mechlab.errors import DataError, InputError
from mechlab.models.loading import load_model

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When John and Mary went to the store, Mary gave a drink to"


def with_random_biases(model, seed: int = 0):
    """Give every bias and norm a non-trivial value, so a term left out of a sum shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.split(".")[-1] in ("b", "w", "b_O", "b_U", "b_in", "b_out", "b_Q", "b_V"):
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model


@pytest.fixture(scope="module", params=["random:tiny", "random:llama-tiny", "gemma3"])
def small(request, tmp_path_factory):
    """A GPT-2-shaped (LayerNorm, biases), a Llama-shaped (RMSNorm, rotary, grouped-query) and a
    Gemma-3-shaped (norms before and after each sublayer, sliding windows) random model; the
    Gemma one with weights 10x Hugging Face's initial scale, so that its logits differ between
    the two prompts by more than rounding."""
    spec = request.param
    if spec == "gemma3":
        directory = tmp_path_factory.mktemp("hf-gemma3-loud")
        spec = str(build_hf_gemma3(directory, initializer_range=0.2))
    return with_random_biases(load_model(spec))


def post_attention_scale(model, cache, layer: int):
    """What Gemma's ln1_post does to block `layer`'s attention output at the last position, with
    its scale frozen at the run's: a factor per d_model (1 in models without it)."""
    if not model.cfg.use_normalization_before_and_after:
        return torch.ones(model.cfg.d_model)
    norm = model.blocks[layer].ln1_post
    return norm.w / cache[f"blocks.{layer}.ln1_post.hook_scale"][0, -1]


PROMPT_A, PROMPT_B = "abcdefghij", "abcdxfghij"  # same length in the byte tokenizer


def logit_diff(logits, answer: int, wrong: int) -> float:
    return (logits[0, -1, answer] - logits[0, -1, wrong]).item()


def reference_grid(model, over, clean, corrupted, answer, wrong, shift: int = 0):
    """The raw logit-difference change of each patch, by full runs with hand-written hooks. With
    `shift`, positions are patched `shift` places off: a planted bug."""
    cfg = model.cfg
    _, cache = model.run_with_cache(clean)
    base = logit_diff(model(corrupted), answer, wrong)
    pos = clean.shape[1]
    if over == "heads":
        names = [f"blocks.{layer}.attn.hook_z" for layer in range(cfg.n_layers)]
        cells = range(cfg.n_heads)
    elif over == "resid":
        names = [f"blocks.{layer}.hook_resid_pre" for layer in range(cfg.n_layers)]
        cells = range(pos)
    else:
        names = [
            f"blocks.{layer}.hook_{part}_out"
            for layer in range(cfg.n_layers)
            for part in ("attn", "mlp")
        ]
        cells = range(pos)
    grid = torch.zeros(len(names), len(cells))
    for row, name in enumerate(names):
        for cell in cells:

            def hook(activation, hook, cell=cell):
                if over == "heads":
                    activation[:, :, cell] = cache[hook.name][:, :, cell]
                else:
                    target = (cell + shift) % pos
                    activation[:, target] = cache[hook.name][:, cell]
                return activation

            logits = model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)])
            grid[row, cell] = logit_diff(logits, answer, wrong) - base
    return grid


@pytest.mark.parametrize("over", ["heads", "resid", "layers"])
def test_exact_patching_matches_hand_written_hooks(small, over):
    clean, corrupted = small.to_tokens(PROMPT_A), small.to_tokens(PROMPT_B)
    result = patch(small, clean, corrupted, answer=3, wrong=7, over=over)
    span = result.clean_logit_diff - result.corrupted_logit_diff
    assert abs(span) > 0.01
    expected = reference_grid(small, over, clean, corrupted, 3, 7)
    torch.testing.assert_close(result.grid * span, expected, atol=1e-5, rtol=1e-5)
    if over != "heads":  # the comparison catches a patch at the wrong position
        shifted = reference_grid(small, over, clean, corrupted, 3, 7, shift=1)
        assert not torch.allclose(result.grid * span, shifted, atol=1e-3)


def test_head_and_resid_patching_match_transformer_lens_own(small):
    from transformer_lens import patching

    clean, corrupted = small.to_tokens(PROMPT_A), small.to_tokens(PROMPT_B)
    _, cache = small.run_with_cache(clean)
    base = logit_diff(small(corrupted), 3, 7)

    def metric(logits):
        return logits[0, -1, 3] - logits[0, -1, 7] - base

    for over, reference in [
        ("heads", patching.get_act_patch_attn_head_out_all_pos(small, corrupted, cache, metric)),
        ("resid", patching.get_act_patch_resid_pre(small, corrupted, cache, metric)),
    ]:
        result = patch(small, clean, corrupted, answer=3, wrong=7, over=over)
        span = result.clean_logit_diff - result.corrupted_logit_diff
        torch.testing.assert_close(result.grid * span, reference.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("over", ["heads", "resid", "layers"])
def test_patching_a_run_into_itself_gives_its_own_end(small, over):
    """Patching a run's activations into that same run changes nothing, in every cell: clean into
    clean gives 1 and corrupted into corrupted 0 (the normalisation's two ends, exactly)."""
    clean, corrupted = small.to_tokens(PROMPT_A), small.to_tokens(PROMPT_B)
    result = patch(small, clean, corrupted, answer=3, wrong=7, over=over)
    metric = LogitDiff(small, 3, 7)
    span = result.clean_logit_diff - result.corrupted_logit_diff
    names = {"blocks.0.attn.hook_z"}
    with torch.inference_mode():
        for tokens, end in [(clean, 1.0), (corrupted, 0.0)]:
            cache = run_with_cache(small, tokens, names | set(result_names(small, over)))
            raw = exact_grid(small, over, cache, cache, metric)
            normalised = (raw - result.corrupted_logit_diff) / span
            expected = torch.full_like(normalised, end)
            torch.testing.assert_close(normalised, expected, atol=1e-4, rtol=0)


def result_names(model, over):
    from mechlab.analysis.patching import hook_names

    return hook_names(model, over)


def test_resid_patching_at_the_first_layer_restores_where_the_prompts_differ(small):
    clean, corrupted = small.to_tokens(PROMPT_A), small.to_tokens(PROMPT_B)
    result = patch(small, clean, corrupted, answer=3, wrong=7, over="resid")
    differs = (clean[0] != corrupted[0]).nonzero().flatten().tolist()
    assert differs == [5]  # BOS + "abcd" then the changed byte
    same = [p for p in range(clean.shape[1]) if p not in differs]
    span = result.clean_logit_diff - result.corrupted_logit_diff
    raw = result.grid[0, same] * span  # logit differences, as the other grids are compared
    torch.testing.assert_close(raw, torch.zeros(len(same)), atol=1e-5, rtol=0)
    assert result.grid[0, 5].abs() > 1e-3


@pytest.mark.numerics
@pytest.mark.parametrize("over", ["heads", "resid", "layers"])
def test_attribution_patching_is_the_first_order_term(small, over):
    """Each attribution cell is the derivative of the logit difference along clean - corrupted:
    checked against central finite differences of runs with hand-written interpolating hooks."""
    clean, corrupted = small.to_tokens(PROMPT_A), small.to_tokens(PROMPT_B)
    result = patch(small, clean, corrupted, answer=3, wrong=7, over=over, method="attribution")
    span = result.clean_logit_diff - result.corrupted_logit_diff
    _, clean_cache = small.run_with_cache(clean)
    _, corrupted_cache = small.run_with_cache(corrupted)
    epsilon = 1e-2
    # a few cells of each grid: every row's largest cell
    for row in range(result.grid.shape[0]):
        col = int(result.grid[row].abs().argmax())
        name = result_names(small, over)[row]

        def run(alpha, name=name, col=col):
            def hook(activation, hook):
                delta = clean_cache[name] - corrupted_cache[name]
                if over == "heads":
                    activation[:, :, col] += alpha * delta[:, :, col]
                else:
                    activation[:, col] += alpha * delta[:, col]
                return activation

            return logit_diff(small.run_with_hooks(corrupted, fwd_hooks=[(name, hook)]), 3, 7)

        derivative = (run(epsilon) - run(-epsilon)) / (2 * epsilon)
        assert result.grid[row, col].item() * span == pytest.approx(derivative, abs=2e-3, rel=2e-2)


@pytest.mark.numerics
def test_logit_attribution_adds_up_and_matches_transformer_lens(small):
    tokens = small.to_tokens(PROMPT_A)
    _, cache = small.run_with_cache(tokens)
    n_layers = small.cfg.n_layers
    for wrong in (None, 7):
        result = logit_attribution(small, tokens, answer=3, wrong=wrong)
        assert result.sum_of_parts == pytest.approx(result.total, abs=1e-4)
        # TransformerLens's own: the stacked outputs through its frozen final norm (logit_attrs
        # applies the norm with the cached scale itself). Its head results are z W_O, before
        # Gemma's post-attention norm: that is applied here by hand, frozen, per layer.
        incorrect = None if wrong is None else torch.tensor([7])
        heads = cache.stack_head_results(layer=None, pos_slice=-1)  # [layer*head, 1, d_model]
        heads = heads.reshape(n_layers, small.cfg.n_heads, 1, -1)
        heads = torch.stack(
            [heads[layer] * post_attention_scale(small, cache, layer) for layer in range(n_layers)]
        ).flatten(0, 1)
        stacks = {
            "heads": heads,
            "mlps": torch.stack(
                [cache[f"blocks.{layer}.hook_mlp_out"][:, -1] for layer in range(n_layers)]
            ),
            # each layer's heads and bias together are exactly what it added to the residual
            "layers": torch.stack(
                [cache[f"blocks.{layer}.hook_attn_out"][:, -1] for layer in range(n_layers)]
            ),
        }
        ours = {
            "heads": result.heads,
            "mlps": result.mlps,
            "layers": result.heads.sum(1) + result.attn_bias,
        }
        for field, stack in stacks.items():
            reference = cache.logit_attrs(
                stack, tokens=torch.tensor([3]), incorrect_tokens=incorrect, pos_slice=-1
            )
            torch.testing.assert_close(
                ours[field].flatten(), reference.flatten().float(), atol=1e-5, rtol=1e-5
            )


@pytest.mark.parametrize("checkpoint", ["hf_gpt2_dir", "hf_llama_dir", "hf_gemma3_dir"])
def test_logit_attribution_adds_up_without_weight_processing(checkpoint, request):
    """Unfolded norms keep their weight and bias: the bias goes through W_U into unembed_bias."""
    model = load_model(
        str(request.getfixturevalue(checkpoint)),
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
    )
    with_random_biases(model)
    result = logit_attribution(model, "hello there", answer=104, wrong=101)
    assert result.sum_of_parts == pytest.approx(result.total, abs=1e-4)
    assert abs(result.unembed_bias) > 1e-3


@pytest.mark.numerics
@pytest.mark.parametrize("spec", ["random:tiny", "random:llama-tiny"])
def test_logit_attribution_adds_up_in_bfloat16(spec):
    """In bfloat16 the parts (summed in float64) and the model's own rounded logits differ by
    rounding only: within the tolerance sized from the dtype, and close to float32's answer."""
    exact = logit_attribution(with_random_biases(load_model(spec)), PROMPT_A, answer=3, wrong=7)
    half = with_random_biases(load_model(spec, dtype="bfloat16"))
    result = logit_attribution(half, PROMPT_A, answer=3, wrong=7)
    assert result.sum_of_parts == pytest.approx(result.total, abs=0.05)
    assert result.sum_of_parts == pytest.approx(exact.total, abs=0.05)
    torch.testing.assert_close(result.heads, exact.heads, atol=0.05, rtol=0.05)


def test_a_decomposition_that_leaves_a_norm_out_is_refused(hf_gemma3_dir, monkeypatch):
    """The identity check is what stands between a wrong decomposition and the user: with Gemma's
    post-attention norm left out (the bug it was written for), the result is refused."""
    import mechlab.analysis.dla

    model = with_random_biases(load_model(str(hf_gemma3_dir)))
    logit_attribution(model, PROMPT_A, answer=3, wrong=7)  # the real one adds up
    monkeypatch.setattr(mechlab.analysis.dla, "attention_output_norms", lambda model, layer: [])
    with pytest.raises(DataError, match=r"does not add up .* parts sum to .* \(gap [+-]"):
        logit_attribution(model, PROMPT_A, answer=3, wrong=7)


def test_leaving_a_term_out_breaks_the_sum(small):
    result = logit_attribution(small, small.to_tokens(PROMPT_A), answer=3, wrong=7)
    assert abs(result.attn_bias.sum().item()) > 1e-3 and abs(result.unembed_bias) > 1e-3
    assert result.sum_of_parts - result.unembed_bias != pytest.approx(result.total, abs=1e-4)


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_ablation_matches_hand_written_hooks_and_transformer_lens_loss(small, method):
    tokens = repeated_tokens(small, seq_len=12, batch=4)
    heads = [(0, 1), (1, 0), (1, 2)]
    result = ablate_heads(small, heads, tokens, method=method)
    _, cache = small.run_with_cache(tokens)

    def hook(z, hook):
        layer = hook.layer()
        for l_, h in heads:
            if l_ != layer:
                continue
            clean = cache[hook.name][:, :, h]
            if method == "zero":
                z[:, :, h] = 0
            elif method == "mean":
                z[:, :, h] = clean.mean((0, 1))
            else:
                z[:, :, h] = torch.cat([clean[1:], clean[:1]])
        return z

    loss = small.run_with_hooks(
        tokens,
        return_type="loss",
        loss_per_token=True,
        fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook) for layer in (0, 1)],
    )
    torch.testing.assert_close(result.loss_by_position, loss.mean(0), atol=1e-5, rtol=1e-5)
    clean_loss = small(tokens, return_type="loss", loss_per_token=True).mean(0)
    torch.testing.assert_close(result.clean_loss_by_position, clean_loss, atol=1e-5, rtol=1e-5)
    assert result.delta_second_half == pytest.approx(
        loss.mean(0)[12:].mean().item() - clean_loss[12:].mean().item(), abs=1e-5
    )


def test_bad_input_is_a_clear_error(small):
    tokens = repeated_tokens(small, seq_len=5, batch=2)
    with pytest.raises(InputError, match="no heads selected"):
        ablate_heads(small, [], tokens)
    with pytest.raises(InputError, match="out of range"):
        ablate_heads(small, [(0, small.cfg.n_heads)], tokens)
    with pytest.raises(InputError, match="unknown ablation method"):
        ablate_heads(small, [(0, 0)], tokens, method="noise")
    with pytest.raises(InputError, match="at least 2"):
        ablate_heads(small, [(0, 0)], tokens[:1], method="resample")
    with pytest.raises(InputError, match=r"clean is 5 tokens .* corrupted is 6 tokens"):
        patch(small, "abcd", "abcde", answer=3, wrong=7)
    with pytest.raises(InputError, match="is 2 tokens"):
        patch(small, "abcd", "abce", answer="xy", wrong=7)
    with pytest.raises(InputError, match="same token"):
        patch(small, "abcd", "abce", answer=3, wrong=3)
    with pytest.raises(InputError, match="cannot patch over"):
        patch(small, "abcd", "abce", answer=3, wrong=7, over="neurons")
    with pytest.raises(InputError, match="same logit difference"):
        patch(small, "abcd", "abcd", answer=3, wrong=7)
    with pytest.raises(InputError, match="same token"):
        logit_attribution(small, "abcd", answer=3, wrong=3)
    with pytest.raises(InputError, match="one prompt, got a batch of 2"):
        logit_attribution(small, tokens, answer=3)


# --------------------------------------------------------------------------------------------------
# SmolLM2: grouped-query attention, and what the tools find in a real model


def test_patching_and_dla_run_per_query_head_on_smollm2(smollm2):
    cfg = smollm2.cfg
    assert cfg.n_key_value_heads < cfg.n_heads == 9
    exact = patch(smollm2, CLEAN, CORRUPTED, answer=" Mary", wrong=" John")
    assert exact.grid.shape == (cfg.n_layers, 9) and exact.row_labels[0] == "L0"
    assert exact.clean_logit_diff > 2 and exact.corrupted_logit_diff < -2
    dla = logit_attribution(smollm2, CLEAN, answer=" Mary", wrong=" John")
    assert dla.heads.shape == (cfg.n_layers, 9)
    assert dla.sum_of_parts == pytest.approx(dla.total, abs=1e-4)
    assert dla.total == pytest.approx(exact.clean_logit_diff, abs=1e-3)
    # attribution patching ranks the heads as exact patching does (measured: 0.93 and 8/10)
    estimate = patch(smollm2, CLEAN, CORRUPTED, answer=" Mary", wrong=" John", method="attribution")
    scores = agreement(exact, estimate)
    assert scores["pearson"] > 0.85 and scores["top10_overlap"] >= 0.6, scores
    # the head that carries most of the answer is found by both, and writes it directly
    assert exact.top(1)[0][:2] == estimate.top(1)[0][:2] == ("L23", "H3")
    assert dla.top_heads(1)[0][:2] == (23, 3)


@pytest.mark.numerics
def test_smollm2_needs_its_induction_heads(smollm2):
    """Ablating the top induction heads together ruins the repeat; as many non-induction heads of
    the same layers barely matter (measured: +3.8 vs +0.03 nats for K = 3, mean ablation)."""
    scan = scan_heads(smollm2, seq_len=30, batch=6)
    study = ablation_study(smollm2, scan, 3, method="mean")
    assert study.joint.delta_second_half > 1.5
    assert study.joint.delta_second_half > 10 * max(study.control.delta_second_half, 0.01)
    assert all(result.delta_second_half > 0 for result in study.singles)
    induction = scan.score("induction")
    assert all(induction[layer, head] <= 0.4 for layer, head in study.control.heads)
    assert [layer for layer, _ in study.control.heads] == [layer for layer, _ in study.joint.heads]
    # one clean run serves every ablation of a batch
    ablator = Ablator(smollm2, scan.tokens, "zero")
    assert (
        ablator.ablate([(0, 0)]).clean_loss_by_position
        is ablator.ablate([(1, 1)]).clean_loss_by_position
    )


def test_logit_attribution_adds_up_without_any_norm():
    """No final norm (as in Nanda et al.'s grokking model): the parts go straight to W_U."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=16,
        n_ctx=16,
        d_head=4,
        n_heads=4,
        d_vocab=20,
        d_mlp=32,
        act_fn="relu",
        normalization_type=None,
        seed=0,
    )
    model = with_random_biases(HookedTransformer(cfg))
    result = logit_attribution(model, [0, 5, 6, 7], answer=3, wrong=4)
    assert abs(result.total) > 1e-3 and abs(result.unembed_bias) > 1e-3
    assert result.sum_of_parts == pytest.approx(result.total, abs=1e-5)

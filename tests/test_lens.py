"""Logit lens: the output row is the model's own logits; every row agrees with TransformerLens's
accumulated_resid(apply_ln=True) + unembedding; SmolLM2 finds Paris; chunking changes nothing."""

import json

import pytest
import torch
from torch.testing import assert_close

from mechlab import load_model
from mechlab.analysis.lens import (
    BLOCK,
    block_top_k,
    cached_residuals,
    decode_residuals,
    decoded_logits,
    lens_curves,
    logit_lens,
    positions_per_chunk,
)
from mechlab.cli import main

PROMPT = "When Mary and John went to the store, John gave a drink to"
RAW = dict(fold_ln=False, center_writing_weights=False, center_unembed=False)


@pytest.mark.parametrize(
    "spec,kwargs",
    [
        ("random:tiny", {}),
        ("random:tiny", RAW),
        ("random:llama-tiny", {}),
        ("random:llama-tiny", RAW),
        ("random:gpt2-small", {}),
    ],
)
def test_output_row_is_the_models_logits(spec, kwargs):
    model = load_model(spec, **kwargs)
    tokens = model.to_tokens(PROMPT)
    with torch.no_grad():
        assert_close(decoded_logits(model, tokens)[-1], model(tokens)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "spec,kwargs",
    [
        ("random:tiny", {}),
        ("random:tiny", RAW),
        ("random:llama-tiny", {}),
        ("random:llama-tiny", RAW),
    ],
)
@pytest.mark.parametrize("include_mid", [False, True])
def test_rows_agree_with_transformer_lens_accumulated_resid(spec, kwargs, include_mid):
    model = load_model(spec, **kwargs)
    tokens = model.to_tokens(PROMPT)
    _, cache = model.run_with_cache(tokens)
    expected = model.unembed(cache.accumulated_resid(apply_ln=True, incl_mid=include_mid)[:, 0])
    assert_close(
        decoded_logits(model, tokens, include_mid=include_mid), expected, atol=1e-4, rtol=1e-4
    )


def test_reusing_the_final_scale_would_be_caught():
    """The checker can fail: TransformerLens issue 1076's cached-scale lens differs from ours."""
    model = load_model("random:tiny", **RAW)
    tokens = model.to_tokens(PROMPT)
    _, cache = model.run_with_cache(tokens)
    stale = cache.apply_ln_to_stack(
        cache.accumulated_resid(), layer=model.cfg.n_layers, recompute_ln=False
    )
    assert not torch.allclose(model.unembed(stale[:, 0]), decoded_logits(model, tokens), atol=1e-2)


@pytest.mark.numerics
def test_statistics_match_the_full_logits():
    model = load_model("random:llama-tiny@2")
    tokens = model.to_tokens(PROMPT)
    logits = decoded_logits(model, tokens)
    result = logit_lens(model, tokens, top_k=3, target=ord("o"))
    log_probs = logits.log_softmax(-1)
    top = log_probs.topk(3, -1)
    # The lens decodes with its own matmul shapes, so its logits may differ from these in the last
    # bits (by kernel): compare the values at the ids it picked, not the ids (near-ties may swap).
    assert_close(log_probs.gather(-1, result.top_ids), top.values, atol=1e-5, rtol=1e-5)
    assert_close(result.top_probs, top.values.exp())
    next_ids = tokens[0, 1:]
    assert_close(
        result.next_token_log_prob[:, :-1],
        log_probs[:, :-1].gather(-1, next_ids.expand(len(logits), -1)[..., None])[..., 0],
    )
    final = log_probs[-1]
    kl = (final.exp() * (final - log_probs)).sum(-1)
    assert_close(result.kl_to_final, kl.clamp_min(0), atol=1e-5, rtol=1e-4)
    assert_close(result.entropy, -(log_probs.exp() * log_probs).sum(-1), atol=1e-5, rtol=1e-4)
    # the rank counts the tokens above the target: between those above it by more than rounding
    # (1e-5 in log-probability, float32 sums over 257 logits) and those above it at all, less it
    target = log_probs[..., ord("o")][..., None]
    assert ((log_probs > target + 1e-5).sum(-1) <= result.target_rank).all()
    assert (result.target_rank <= (log_probs > target - 1e-5).sum(-1)).all()
    assert (
        result.next_token_rank[:, -1].eq(-1).all() and result.next_token_prob[:, -1].isnan().all()
    )


@pytest.mark.numerics
def test_a_prefix_decodes_the_same_bit_for_bit_as_the_whole_prompt():
    """Positions are decoded in chunks of a size fixed by the model, the last padded to the same
    shape (lens.positions_per_chunk), so a position's statistics do not depend on how many follow
    it: the same by construction on every CPU, not by one kernel's rounding."""
    model = load_model("random:gpt2-small")
    tokens = model.to_tokens(PROMPT * 3)
    assert positions_per_chunk(13, 50257) < tokens.shape[1]  # several chunks, the last one short
    residuals, _ = cached_residuals(model, tokens, include_mid=False)
    options = dict(top_k=5, target_id=220)
    with torch.inference_mode():
        whole = decode_residuals(model, residuals, tokens[0], **options)
        for length in [1, 7, tokens.shape[1] - 1]:
            part = decode_residuals(model, residuals[:, :length], tokens[0, :length], **options)
            for name, value in part.items():
                # the part's last position has no next token; the whole's has one
                end = length - 1 if name.startswith("next") else length
                assert_close(value[:, :end], whole[name][:, :end], atol=0, rtol=0, msg=name)


def test_include_mid_doubles_the_rows():
    model = load_model("random:tiny")
    result = logit_lens(model, "abc", include_mid=True)
    assert result.layers == ["embed", "L0 mid", "after L0", "L1 mid", "after L1 (output)"]


@pytest.mark.slow
def test_smollm2_finds_paris(smollm2, tmp_path):
    result = logit_lens(smollm2, "The capital of France is", target=" Paris")
    assert result.top_tokens[-1][-1][0] == " Paris"
    assert result.kl_to_final[-1].abs().max().item() == 0.0
    layer = result.first_top1_layer
    assert layer is not None and 0 < layer < len(result.layers) - 1
    assert result.target_rank[layer:, -1].eq(0).all() and result.target_rank[layer - 1, -1] > 0
    _, cache = smollm2.run_with_cache(smollm2.to_tokens("The capital of France is"))
    expected = smollm2.unembed(cache.accumulated_resid(apply_ln=True)[:, 0])
    assert_close(
        decoded_logits(smollm2, "The capital of France is"), expected, atol=1e-4, rtol=1e-4
    )
    out = tmp_path / "lens"
    assert (
        main(
            [
                "lens",
                "--model",
                "smollm2-135m",
                "--prompt",
                "The capital of France is",
                "--target",
                " Paris",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "lens.json").read_text())
    assert report["target"]["first_top1_layer"] == layer and report["target"]["token"] == " Paris"
    assert set(report["target"]) == {"token", "prob", "rank", "first_top1_layer"}


LENS_KEYS = {
    "model",
    "lens",
    "prompt",
    "tokens",
    "layers",
    "top_tokens",
    "top_probs",
    "next_token_prob",
    "next_token_rank",
    "kl_to_final",
    "entropy",
    "target",
}


def test_cli_lens_writes_json_figures_and_page(tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            [
                "lens",
                "--model",
                "random:tiny",
                "--prompt",
                "Hello world",
                "--top-k",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "lens.json").read_text())
    assert set(report) == LENS_KEYS and report["target"] is None
    assert len(report["layers"]) == 3 and len(report["tokens"]) == 12
    assert len(report["top_tokens"][0][0]) == 3 and report["next_token_prob"][0][-1] is None
    assert {p.name for p in out.iterdir()} == {
        "lens.json",
        "lens_top1.png",
        "lens_rank.png",
        "lens_kl.png",
        "lens.html",
    }


def test_cli_lens_prompts_file_makes_curves(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat\n\nOn the mat\nA third one\n")
    out = tmp_path / "out"
    assert (
        main(["lens", "--model", "random:tiny", "--prompts-file", str(prompts), "--out", str(out)])
        == 0
    )
    report = json.loads((out / "lens.json").read_text())
    assert report["curves"]["n_prompts"] == 3 and len(report["curves"]["kl_to_final"]) == 3
    assert (
        report["curves"]["kl_to_final"][-1] == 0.0 and report["curves"]["top1_agreement"][-1] == 1.0
    )
    assert (out / "lens_curves.png").exists()


def test_curves_average_over_prompts():
    model = load_model("random:tiny")
    results = [logit_lens(model, text) for text in ["ab", "cde"]]
    curves = lens_curves(results)
    expected = torch.cat([results[0].kl_to_final, results[1].kl_to_final], 1).mean(1)
    assert_close(curves.kl_to_final, expected)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--prompt", " "], "prompt is empty"),
        (["--prompt", "x" * 300], "context window of 256"),
        (["--prompt", "hi", "--target", "ab"], "target 'ab' is 2 tokens ['a', 'b']"),
        (["--prompt", "hi", "--top-k", "0"], "argument --top-k: must be at least 1, got 0"),
        (["--prompt", "hi", "--top-k", "1000"], "top_k must be between 1 and 257"),
    ],
)
def test_cli_lens_bad_input_leaves_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["lens", "--model", "random:tiny", "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_prompts_file_errors(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert (
        main(
            [
                "lens",
                "--model",
                "random:tiny",
                "--prompts-file",
                str(empty),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "no prompts" in capsys.readouterr().err
    assert (
        main(
            [
                "lens",
                "--model",
                "random:tiny",
                "--prompts-file",
                str(tmp_path / "missing.txt"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "cannot read" in capsys.readouterr().err


def test_a_prompt_too_long_for_the_memory_is_refused_before_the_forward_pass(
    tmp_path, capsys, monkeypatch
):
    import mechlab.memory
    from mechlab.analysis.attention import attention_patterns
    from mechlab.errors import ResourceError

    model = load_model("random:gpt2-small")
    tokens = torch.randint(0, 257, (1, 1000))
    monkeypatch.setattr(mechlab.memory, "available_bytes", lambda: 100 << 20)  # 100 MiB free
    with pytest.raises(ResourceError, match=r"the lens over 1000 tokens needs about .* available"):
        logit_lens(model, tokens)
    with pytest.raises(ResourceError, match="attention patterns of a 1000-token prompt"):
        attention_patterns(model, tokens, [0], last=256)
    out = tmp_path / "out"
    prompt = "many words " * 90  # 990 bytes: within the context, beyond 100 MiB
    code = main(["lens", "--model", "random:gpt2-small", "--prompt", prompt, "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs about" in err[0] and "use a shorter prompt" in err[0]
    assert not out.exists()


@pytest.mark.numerics
@pytest.mark.parametrize(
    "case", ["random", "top in one block", "top in the tail", "ties", "few blocks"]
)
def test_block_top_k_finds_the_same_values_as_a_full_topk(case):
    """Exact values and row maxima; columns hold those values (which of equal scores is free)."""
    generator = torch.Generator().manual_seed(0)
    vocab = 300 if case == "few blocks" else 50_257
    scores = torch.randn(6, vocab, generator=generator)
    if case == "top in one block":  # every one of the k best in block 3: the others hold none
        scores[:, 3 * BLOCK : 4 * BLOCK] += 10
    elif case == "top in the tail":  # the columns after the last whole block
        scores[:, -5:] += 10
    elif case == "ties":
        scores = scores.round(decimals=1)
    values, columns, row_max = block_top_k(scores, 7)
    expected = scores.topk(7, dim=-1)
    assert torch.equal(values, expected.values)
    assert torch.equal(scores.gather(1, columns), values)
    assert torch.equal(row_max, scores.amax(-1))
    if case != "ties":
        assert torch.equal(columns, expected.indices)

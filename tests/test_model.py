"""The from-scratch Transformer against TransformerLens and Hugging Face, component by component
(as ARENA's exercise tests do), then whole models on many configurations, then planted bugs."""

import dataclasses

import pytest
import torch
from jaxtyping import TypeCheckError
from torch.testing import assert_close
from transformer_lens import HookedTransformer, HookedTransformerConfig

from mechlab import InputError, ModelUnavailableError, load_model
from mechlab.models.hooked import quiet_hooked_deprecation
from mechlab.models.huggingface import load_hf_model
from mechlab.scratch.convert import load_exactly
from mechlab.scratch.model import (
    MLP,
    Attention,
    Config,
    Embed,
    LayerNorm,
    PosEmbed,
    RMSNorm,
    Transformer,
    TransformerBlock,
    Unembed,
    causal_mask,
)
from mechlab.scratch.parity import compare

# parity and precision against references: run under other kernel paths too (make test-kernels)
pytestmark = pytest.mark.numerics

RAW = dict(fold_ln=False, center_writing_weights=False, center_unembed=False)
PROMPT = "Induction heads copy: abc xyz abc xyz"


def cached(model: HookedTransformer):
    tokens = model.to_tokens(PROMPT)
    _, cache = model.run_with_cache(tokens)
    return tokens, cache


def component(scratch_cls, cfg: Config, reference_module, prefix: str = ""):
    """A scratch component holding the reference component's weights."""
    module = scratch_cls(cfg)
    state = {
        k.replace("_W_K", "W_K")
        .replace("_W_V", "W_V")
        .replace("_b_K", "b_K")
        .replace("_b_V", "b_V"): v
        for k, v in reference_module.state_dict().items()
    }
    load_exactly(module, state)
    return module


# ------------------------------------------------------------------------------------------------
# Per component, on TransformerLens's cached inputs


@pytest.fixture(scope="module", params=["random:tiny", "random:llama-tiny"])
def raw_model(request):
    return load_model(request.param, **RAW)


def test_norm(raw_model):
    _tokens, cache = cached(raw_model)
    cfg = Transformer.from_hooked(raw_model).cfg
    Norm = LayerNorm if cfg.normalization == "LN" else RMSNorm
    ln1 = component(Norm, cfg, raw_model.blocks[0].ln1)
    assert ln1.w.std() > 0.01  # the random presets' norm weights are not all ones
    assert_close(
        ln1(cache["blocks.0.hook_resid_pre"]),
        raw_model.blocks[0].ln1(cache["blocks.0.hook_resid_pre"]),
    )
    expected = cache["blocks.0.ln1.hook_normalized"] * raw_model.blocks[0].ln1.w
    if cfg.normalization == "LN":
        expected = expected + raw_model.blocks[0].ln1.b
    assert_close(ln1(cache["blocks.0.hook_resid_pre"]), expected, atol=1e-5, rtol=1e-5)


def test_embed_and_pos_embed(raw_model):
    tokens, cache = cached(raw_model)
    cfg = Transformer.from_hooked(raw_model).cfg
    assert_close(component(Embed, cfg, raw_model.embed)(tokens), cache["hook_embed"])
    if cfg.positional == "learned":
        assert_close(component(PosEmbed, cfg, raw_model.pos_embed)(tokens), cache["hook_pos_embed"])


def test_attention(raw_model):
    _, cache = cached(raw_model)
    cfg = Transformer.from_hooked(raw_model).cfg
    attn = component(Attention, cfg, raw_model.blocks[1].attn)
    out, pattern = attn(
        cache["blocks.1.ln1.hook_normalized"] * raw_model.blocks[1].ln1.w
        + (raw_model.blocks[1].ln1.b if cfg.normalization == "LN" else 0)
    )
    assert_close(pattern, cache["blocks.1.attn.hook_pattern"], atol=1e-5, rtol=1e-4)
    assert_close(out, cache["blocks.1.hook_attn_out"], atol=1e-5, rtol=1e-4)


def test_mlp(raw_model):
    _, cache = cached(raw_model)
    cfg = Transformer.from_hooked(raw_model).cfg
    mlp = component(MLP, cfg, raw_model.blocks[0].mlp)
    ln2 = raw_model.blocks[0].ln2
    assert_close(
        mlp(ln2(cache["blocks.0.hook_resid_mid"])),
        cache["blocks.0.hook_mlp_out"],
        atol=1e-5,
        rtol=1e-4,
    )


def test_block(raw_model):
    _, cache = cached(raw_model)
    cfg = Transformer.from_hooked(raw_model).cfg
    block = component(TransformerBlock, cfg, raw_model.blocks[1])
    out = block(cache["blocks.1.hook_resid_pre"])
    assert_close(out["resid_post"], cache["blocks.1.hook_resid_post"], atol=1e-5, rtol=1e-4)


def test_unembed(raw_model):
    tokens, cache = cached(raw_model)
    cfg = Transformer.from_hooked(raw_model).cfg
    unembed = component(Unembed, cfg, raw_model.unembed)
    final = raw_model.ln_final(cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"])
    assert_close(unembed(final), raw_model(tokens), atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# Whole models on many configurations


def hooked(seed=0, tie=False, process=False, **fields):
    base = dict(
        n_layers=2,
        d_model=48,
        n_heads=4,
        d_head=12,
        d_mlp=96,
        n_ctx=32,
        d_vocab=101,
        act_fn="gelu_new",
        normalization_type="LN",
    )
    cfg = HookedTransformerConfig(**{**base, **fields}, seed=None)
    torch.manual_seed(seed)
    with quiet_hooked_deprecation():
        model = HookedTransformer(cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith((".w", ".b")) or name.startswith("ln_final"):
                param.add_(0.2 * torch.randn_like(param))  # non-trivial norm weights and biases
            elif name.endswith(
                ("b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U", "_b_K", "_b_V")
            ):
                param.normal_(std=0.1)
        if tie:
            model.unembed.W_U.copy_(model.embed.W_E.T)
    if process:
        model.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    assert (
        model.cfg.n_layers == cfg.n_layers and model.cfg.d_model == cfg.d_model
    )  # the config took effect
    return model.eval()


# Gemma 3's changes on a small scale: a local layer (a window of 4 positions, on 20-token inputs)
# then a global one, each with its own rotary base; query/key norms, post-norms, GELU gating.
GEMMA3_LIKE = dict(
    normalization_type="RMS",
    positional_embedding_type="rotary",
    rotary_dim=12,
    rotary_base=1_000_000,
    rotary_base_local=10_000,
    rotary_adjacent_pairs=False,
    act_fn="gelu_pytorch_tanh",
    gated_mlp=True,
    final_rms=True,
    n_key_value_heads=2,
    use_qk_norm=True,
    use_normalization_before_and_after=True,
    use_local_attn=True,
    attn_types=["local", "global"],
    window_size=4,
)

CONFIGS = {
    "gpt2-like": dict(),
    "three-heads d_head*n_heads != d_model": dict(n_heads=3, d_head=20),
    "gelu": dict(act_fn="gelu"),
    "relu": dict(act_fn="relu"),
    "silu gated": dict(act_fn="silu", gated_mlp=True),
    "large eps": dict(eps=1e-2),
    "tied embeddings": dict(tie=True),
    "folded": dict(process=True),
    "llama-like": dict(
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=12,
        act_fn="silu",
        gated_mlp=True,
        final_rms=True,
        rotary_adjacent_pairs=False,
    ),
    "llama GQA folded": dict(
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=12,
        act_fn="silu",
        gated_mlp=True,
        final_rms=True,
        n_key_value_heads=2,
        rotary_adjacent_pairs=False,
        process=True,
    ),
    "gemma3-like": dict(GEMMA3_LIKE),
    "gemma3-like folded, attention scale 1/sqrt(10)": dict(
        GEMMA3_LIKE, process=True, use_attn_scale=True, attn_scale=10**0.5
    ),
    "llama rotary base 1e5, partial rotary": dict(
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=8,
        rotary_base=100000,
        act_fn="silu",
        gated_mlp=True,
        final_rms=True,
        rotary_adjacent_pairs=False,
    ),
}


@pytest.mark.parametrize(
    "name",
    ["gpt2-like", "llama GQA folded", "gemma3-like", "llama rotary base 1e5, partial rotary"],
)
def test_last_only_gives_the_last_position_of_the_whole_run(name):
    """`last_only` runs the last block's queries, its MLP and the unembedding on the last position
    alone: the logits are those of the whole run's last position (rotary offsets, the causal mask
    and a local layer's window shifted to match), and nothing else comes back."""
    scratch = Transformer.from_hooked(hooked(**CONFIGS[name]))
    tokens = torch.randint(0, 101, (3, 20), generator=torch.Generator().manual_seed(2))
    full = scratch(tokens)
    last = scratch(tokens, last_only=True)
    assert last.shape == (3, 1, full.shape[-1])
    torch.testing.assert_close(last, full[:, -1:], atol=1e-5, rtol=1e-5)
    # a planted off-by-one (the query rotated as if it sat at position 0) is caught
    if scratch.cfg.positional == "rotary":
        import mechlab.scratch.model as model_module

        rotary = model_module.apply_rotary
        try:
            model_module.apply_rotary = lambda x, cfg, base=None, start=0: rotary(x, cfg, base)
            wrong = scratch(tokens, last_only=True)
        finally:
            model_module.apply_rotary = rotary
        assert (wrong - full[:, -1:]).abs().max() > 1e-3


@pytest.mark.parametrize("name", CONFIGS)
def test_whole_model_matches_hooked_transformer(name):
    model = hooked(**CONFIGS[name])
    tokens = torch.randint(0, 101, (2, 20), generator=torch.Generator().manual_seed(1))
    report = compare(Transformer.from_hooked(model), model, tokens)
    assert report.passed, report.failures
    assert len(report.components) == 2 * 5 + 3 + (model.cfg.positional_embedding_type != "rotary")


@pytest.mark.parametrize("builder", ["hf_gpt2_dir", "hf_llama_dir", "hf_gemma3_dir"])
def test_from_hf_matches_hugging_face_and_from_hooked(builder, request):
    directory = request.getfixturevalue(builder)
    hf = load_hf_model(directory)
    tokens = torch.randint(0, 257, (2, 24), generator=torch.Generator().manual_seed(2))
    from_hf = Transformer.from_hf(hf)
    report = compare(from_hf, hf, tokens)
    assert report.passed, report.failures
    for kwargs in [RAW, {}]:
        hooked_model = load_model(str(directory), **kwargs)
        assert compare(Transformer.from_hooked(hooked_model), hooked_model, tokens).passed
    # Two independent imports of the same raw checkpoint hold the same numbers.
    assert_close(
        Transformer.from_hooked(load_model(str(directory), **RAW))(tokens),
        from_hf(tokens),
        atol=1e-5,
        rtol=1e-4,
    )


@pytest.mark.slow
def test_smollm2_scratch_vs_hooked_vs_hugging_face(smollm2, smollm2_raw, smollm2_hf):
    tokens = smollm2.to_tokens("The capital of France is Paris, and the capital of Italy is")
    for reference, scratch in [
        (smollm2, Transformer.from_hooked(smollm2)),
        (smollm2_raw, Transformer.from_hooked(smollm2_raw)),
        (smollm2_hf, Transformer.from_hf(smollm2_hf)),
    ]:
        report = compare(scratch, reference, tokens)
        assert report.passed, (report.reference, report.failures[:3])
        assert len(report.components) == 30 * 5 + 3
    with torch.no_grad():
        logits = Transformer.from_hf(smollm2_hf)(tokens)
    assert smollm2.tokenizer.decode(logits[0, -1].argmax()).strip() == "Rome"


# ------------------------------------------------------------------------------------------------
# The checker must catch classic bugs, at the right component


def planted(model: HookedTransformer, monkeypatch, bug: str) -> str | None:
    import mechlab.scratch.model as scratch_module

    scratch = Transformer.from_hooked(model)
    if bug == "mask off by one":  # lets every query see one token of the future
        monkeypatch.setattr(
            scratch_module,
            "causal_mask",
            lambda scores: scores.masked_fill(
                torch.ones(scores.shape[-2:], dtype=torch.bool).triu(diagonal=2), float("-inf")
            ),
        )
    elif bug == "missing 1/sqrt(d_head)":
        for block in scratch.blocks:
            block.attn.cfg = dataclasses.replace(block.attn.cfg, attn_scale=1.0)
    elif bug == "biased variance":  # torch.var's default, unbiased, is not what LayerNorm uses
        monkeypatch.setattr(
            LayerNorm,
            "forward",
            lambda self, x: (
                (x - x.mean(-1, keepdim=True))
                / (x.var(-1, keepdim=True) + self.cfg.eps).sqrt()
                * getattr(self, "w", 1)
                + getattr(self, "b", 0)
            ),
        )
    elif bug == "rotary rotated the wrong way":
        original = scratch_module.apply_rotary
        monkeypatch.setattr(
            scratch_module,
            "apply_rotary",
            lambda x, cfg, base=None, start=0: _rotate_backwards(x, cfg, original),
        )
    tokens = torch.randint(
        0, model.cfg.d_vocab, (1, 16), generator=torch.Generator().manual_seed(3)
    )
    return compare(scratch, model, tokens).first_failure


def _rotate_backwards(x, cfg, original):
    """Rotary with every angle negated, built from the real one: rotating (x1, -x2) by +theta and
    negating the second half again is the rotation of (x1, x2) by -theta."""
    half = (cfg.rotary_dim or cfg.d_head) // 2
    flipped = torch.cat([x[..., :half], -x[..., half : 2 * half], x[..., 2 * half :]], -1)
    out = original(flipped, cfg)
    return torch.cat([out[..., :half], -out[..., half : 2 * half], out[..., 2 * half :]], -1)


@pytest.mark.parametrize(
    "bug,spec,where",
    [
        ("mask off by one", "random:tiny", "blocks.0.pattern"),
        ("missing 1/sqrt(d_head)", "random:tiny", "blocks.0.pattern"),
        ("biased variance", "random:tiny", "blocks.0.pattern"),
        ("rotary rotated the wrong way", "random:llama-tiny", "blocks.0.pattern"),
    ],
)
def test_compare_reports_planted_bugs_where_they_start(bug, spec, where, monkeypatch):
    model = load_model(spec, **RAW)
    assert planted(model, monkeypatch, "none") is None
    assert planted(model, monkeypatch, bug) == where


@pytest.mark.parametrize(
    "change,where",
    [
        ({}, None),
        (dict(embed_scale=1.0), "embed"),  # the embedding left unscaled
        (dict(norm_offset=0.0), "blocks.0.pattern"),  # norms scaling by w, not 1 + w
        (dict(attn_types=("global",) * 3), "blocks.0.pattern"),  # no sliding window
        (dict(rotary_base_local=None), "blocks.0.pattern"),  # the global layers' rotary base
        (dict(qk_norm=False), "blocks.0.pattern"),
    ],
)
def test_each_gemma_change_matters(change, where, hf_gemma3_dir):
    """The from-scratch model with one of Gemma's changes undone no longer matches Hugging Face's
    Gemma 3, and the comparison names the first component it breaks."""
    hf = load_hf_model(hf_gemma3_dir)
    right = Transformer.from_hf(hf)
    wrong = Transformer(dataclasses.replace(right.cfg, **change))
    wrong.load_state_dict(right.state_dict(), strict=False)  # without qk_norm: no q/k norm weights
    tokens = torch.randint(0, 257, (2, 24), generator=torch.Generator().manual_seed(4))
    assert compare(wrong, hf, tokens).first_failure == where


# ------------------------------------------------------------------------------------------------
# Bad input and unsupported features


def test_token_ids_out_of_range_and_too_long():
    scratch = Transformer.from_hooked(load_model("random:tiny"))
    with pytest.raises(InputError, match=r"\[0, 257\)"):
        scratch(torch.tensor([[1, 257]]))
    with pytest.raises(InputError, match="n_ctx=256"):
        scratch(torch.zeros(1, 257, dtype=torch.long))


def test_unsupported_feature_is_named():
    model = hooked(parallel_attn_mlp=True)
    with pytest.raises(ModelUnavailableError, match="parallel_attn_mlp"):
        Transformer.from_hooked(model)


def test_shape_annotations_are_checked_at_runtime():
    """The suite runs with jaxtyping's import hook: a tensor of the wrong shape fails at the
    call."""
    scratch = Transformer.from_hooked(load_model("random:tiny"))
    with pytest.raises(TypeCheckError):
        scratch.blocks[0].ln1(torch.zeros(3, 64))  # missing the batch dimension
    with pytest.raises(TypeCheckError):
        causal_mask(torch.zeros(2, 3, 3))  # scores need batch, n_heads, query_pos and key_pos


def test_cli_verify_writes_json_and_passes(tmp_path, capsys):
    from mechlab.cli import main

    assert main(["verify", "--model", "random:llama-tiny", "--json", str(tmp_path / "v.json")]) == 0
    import json

    report = json.loads((tmp_path / "v.json").read_text())
    assert report["passed"] and report["components"][-1]["name"] == "logits"
    assert "blocks.1.pattern" in capsys.readouterr().out

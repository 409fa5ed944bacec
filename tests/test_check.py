"""check_component: mechlab's own components pass; a learner's components, written here
independently of mechlab.scratch.model, pass when right and, with each common bug planted, fail with
that bug named; missing parameters and raising forwards are reported by name."""

import math

import pytest
import torch
from torch import nn

import mechlab
from mechlab.errors import InputError
from mechlab.scratch.check import check_component
from mechlab.scratch.model import (
    MLP,
    Attention,
    Embed,
    LayerNorm,
    PosEmbed,
    RMSNorm,
    Transformer,
    TransformerBlock,
    Unembed,
)

GPT2_LIKE, LLAMA_LIKE = "random:tiny", "random:llama-tiny"


@pytest.mark.parametrize(
    "cls, kind, model",
    [
        (LayerNorm, "layernorm", GPT2_LIKE),
        (Embed, "embed", GPT2_LIKE),
        (PosEmbed, "pos_embed", GPT2_LIKE),
        (Attention, "attention", GPT2_LIKE),
        (MLP, "mlp", GPT2_LIKE),
        (TransformerBlock, "block", GPT2_LIKE),
        (Unembed, "unembed", GPT2_LIKE),
        (Transformer, "transformer", GPT2_LIKE),
        (RMSNorm, "layernorm", LLAMA_LIKE),
        (Attention, "attention", LLAMA_LIKE),
        (MLP, "mlp", LLAMA_LIKE),
        (TransformerBlock, "block", LLAMA_LIKE),
        (Transformer, "transformer", LLAMA_LIKE),
    ],
)
def test_mechlabs_own_components_pass(cls, kind, model):
    report = check_component(cls, kind, model=model, layer=1)
    assert report.passed, report
    assert report.problem is None and report.hint is None
    if kind == "attention":  # the pattern is compared too
        assert [c.name for c in report.components] == ["blocks.1.pattern", "blocks.1.attn_out"]


def test_the_default_reference_is_gpt2_small_shaped():
    report = check_component(Attention, "attention")
    assert report.passed and report.reference == "random:gpt2-small blocks.0.attn"


# --------------------------------------------------------------------------------------------------
# A learner's own components, written without mechlab.scratch.model; class attributes plant the
# bugs.


class LearnerAttention(nn.Module):
    MASK_DIAGONAL = 1  # torch.triu(diagonal=...) of the hidden (future) positions
    SCALED = True
    SOFTMAX_DIM = -1
    ROTARY_SIGN = 1

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        heads, kv_heads, d_model, d_head = cfg.n_heads, cfg.kv_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(heads, d_model, d_head))
        self.W_K = nn.Parameter(torch.empty(kv_heads, d_model, d_head))
        self.W_V = nn.Parameter(torch.empty(kv_heads, d_model, d_head))
        self.W_O = nn.Parameter(torch.empty(heads, d_head, d_model))
        self.b_Q = nn.Parameter(torch.empty(heads, d_head))
        self.b_K = nn.Parameter(torch.empty(kv_heads, d_head))
        self.b_V = nn.Parameter(torch.empty(kv_heads, d_head))
        self.b_O = nn.Parameter(torch.empty(d_model))

    def rotate(self, x):  # x: [batch, pos, heads, d_head]; pairs (i, i + d/2)
        half = x.shape[-1] // 2
        frequencies = self.cfg.rotary_base ** (-torch.arange(half) / half)
        angles = torch.arange(x.shape[1])[:, None] * frequencies[None, :]
        cos, sin = angles.cos()[None, :, None, :], self.ROTARY_SIGN * angles.sin()[None, :, None, :]
        first, second = x[..., :half], x[..., half:]
        return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)

    def forward(self, x):
        q = torch.einsum("bpm,hmd->bphd", x, self.W_Q) + self.b_Q
        k = torch.einsum("bpm,hmd->bphd", x, self.W_K) + self.b_K
        v = torch.einsum("bpm,hmd->bphd", x, self.W_V) + self.b_V
        if self.cfg.positional == "rotary":
            q, k = self.rotate(q), self.rotate(k)
        group = self.cfg.n_heads // self.cfg.kv_heads
        k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k)
        if self.SCALED:
            scores = scores / math.sqrt(self.cfg.d_head)
        pos = x.shape[1]
        future = torch.triu(torch.ones(pos, pos, dtype=torch.bool), diagonal=self.MASK_DIAGONAL)
        pattern = torch.softmax(scores.masked_fill(future, float("-inf")), dim=self.SOFTMAX_DIM)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        return torch.einsum("bqhd,hdm->bqm", z, self.W_O) + self.b_O


class LearnerLayerNorm(nn.Module):
    UNBIASED = False

    def __init__(self, cfg):
        super().__init__()
        self.eps = cfg.eps
        self.w = nn.Parameter(torch.empty(cfg.d_model))
        self.b = nn.Parameter(torch.empty(cfg.d_model))

    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        variance = centred.var(-1, keepdim=True, unbiased=self.UNBIASED)
        return centred / (variance + self.eps).sqrt() * self.w + self.b


class MaskSeesNextToken(LearnerAttention):
    MASK_DIAGONAL = 2


class MaskHidesSelf(LearnerAttention):
    MASK_DIAGONAL = 0


class NoScale(LearnerAttention):
    SCALED = False


class SoftmaxOverQueries(LearnerAttention):
    SOFTMAX_DIM = -2


class RotaryWrongWay(LearnerAttention):
    ROTARY_SIGN = -1


class UnbiasedVariance(LearnerLayerNorm):
    UNBIASED = True


def test_a_learners_correct_components_pass():
    assert check_component(LearnerAttention, "attention", model=GPT2_LIKE).passed
    assert check_component(LearnerAttention, "attention", model=LLAMA_LIKE).passed
    assert check_component(LearnerLayerNorm, "layernorm", model=GPT2_LIKE).passed


@pytest.mark.parametrize(
    "cls, kind, model, named",
    [
        (MaskSeesNextToken, "attention", GPT2_LIKE, "mask off by one: each position also sees"),
        (MaskHidesSelf, "attention", GPT2_LIKE, "mask off by one: each position is hidden"),
        (NoScale, "attention", GPT2_LIKE, "no 1/sqrt(d_head)"),
        (SoftmaxOverQueries, "attention", GPT2_LIKE, "softmax over the wrong dimension"),
        (RotaryWrongWay, "attention", LLAMA_LIKE, "rotary rotated the wrong way"),
        (UnbiasedVariance, "layernorm", GPT2_LIKE, "unbiased variance"),
    ],
)
def test_each_planted_bug_is_caught_and_named(cls, kind, model, named):
    report = check_component(cls, kind, model=model)
    assert not report.passed and report.problem is None
    assert report.hint is not None and report.hint.startswith(named), report.hint
    assert "hint: " + report.hint in repr(report)


def test_a_forgotten_bias_is_named():
    class NoOutputBias(LearnerAttention):
        def forward(self, x):
            return super().forward(x) - self.b_O

    report = check_component(NoOutputBias, "attention", model=GPT2_LIKE)
    assert report.hint == "the bias b_O is not added"


def test_a_missing_parameter_is_reported_by_name_with_its_shape():
    class NoQueryBias(LearnerAttention):
        def __init__(self, cfg):
            super().__init__(cfg)
            del self.b_Q

    report = check_component(NoQueryBias, "attention", model=GPT2_LIKE)
    assert not report.passed and report.components == []
    assert "missing parameter 'b_Q': expected an nn.Parameter of shape (4, 16)" in report.problem
    assert "NoQueryBias (attention, blocks.0.attn of random:tiny)" in report.problem


def test_a_misshapen_or_unexpected_parameter_is_reported_by_name():
    class Transposed(LearnerAttention):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.W_Q = nn.Parameter(torch.empty(cfg.d_model, cfg.n_heads, cfg.d_head))

    class Extra(LearnerLayerNorm):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.gain = nn.Parameter(torch.ones(1))

    problem = check_component(Transposed, "attention", model=GPT2_LIKE).problem
    assert "parameter 'W_Q' has shape (64, 4, 16), expected (4, 64, 16)" in problem
    problem = check_component(Extra, "layernorm", model=GPT2_LIKE).problem
    assert "unexpected parameter 'gain' of shape (1,)" in problem


def test_a_forward_that_raises_is_reported_with_the_component_named():
    class Broken(LearnerLayerNorm):
        def forward(self, x):
            raise RuntimeError("not written yet")

    report = check_component(Broken, "layernorm", model=GPT2_LIKE, layer=1)
    assert not report.passed
    assert report.problem == (
        "Broken (layernorm, blocks.1.ln1 of random:tiny): forward raised RuntimeError: "
        "not written yet"
    )
    assert "FAILED" in repr(report) and "not written yet" in report._repr_html_()


def test_bad_arguments_are_clear_errors():
    with pytest.raises(InputError, match="unknown component kind 'attn'"):
        check_component(Attention, "attn")
    with pytest.raises(InputError, match=r"layer must be an integer in 0\.\.1"):
        check_component(Attention, "attention", model=GPT2_LIKE, layer=2)
    with pytest.raises(InputError, match="no learned positional embedding"):
        check_component(PosEmbed, "pos_embed", model=LLAMA_LIKE)


def test_it_is_a_public_name():
    assert mechlab.check_component is check_component


class ExactGelu(MLP):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.act = torch.nn.functional.gelu


class NoResidual(TransformerBlock):
    def forward(self, resid_pre):
        values = super().forward(resid_pre)
        return values["resid_post"] - resid_pre


class NoFinalNorm(Transformer):
    def forward(self, tokens):
        _, activations = super().forward(tokens, return_activations=True)
        return self.unembed(activations[f"blocks.{self.cfg.n_layers - 1}.resid_post"])


class CentredRMSNorm(LearnerLayerNorm):
    def __init__(self, cfg):
        nn.Module.__init__(self)
        self.eps = cfg.eps
        self.w = nn.Parameter(torch.empty(cfg.d_model))

    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        return centred / (centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt() * self.w


@pytest.mark.parametrize(
    "cls, kind, model, named",
    [
        (ExactGelu, "mlp", GPT2_LIKE, "exact GELU"),
        (NoResidual, "block", GPT2_LIKE, "no residual connection"),
        (NoFinalNorm, "transformer", GPT2_LIKE, "the final norm (ln_final) is not applied"),
        (CentredRMSNorm, "layernorm", LLAMA_LIKE, "the mean is subtracted"),
    ],
)
def test_more_common_bugs_are_named(cls, kind, model, named):
    report = check_component(cls, kind, model=model)
    assert not report.passed and report.hint.startswith(named), report.hint


def test_an_unrecognised_bug_still_fails_with_a_generic_hint():
    class OffByAConstant(LearnerLayerNorm):
        def forward(self, x):
            return super().forward(x) + 0.01

    report = check_component(OffByAConstant, "layernorm", model=GPT2_LIKE)
    assert not report.passed and report.first_failure == "blocks.0.ln1"
    assert report.hint.startswith("no common bug matches")

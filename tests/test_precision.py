"""Device and dtype: SmolLM2 in bfloat16 on this CPU against itself in float32, and the errors for a
device or dtype this machine cannot give."""

import dataclasses

import pytest
import torch

from mechlab import InputError, load_model
from mechlab.analysis.heads import scan_heads
from mechlab.analysis.lens import logit_lens
from mechlab.cli import main
from mechlab.scratch.model import Transformer
from mechlab.scratch.parity import component_names, reference_activations

# parity and precision against references: run under other kernel paths too (make test-kernels)
pytestmark = pytest.mark.numerics

PROMPTS = [
    "The capital of France is",
    "The Eiffel Tower is located in the city of",
    "When Mary and John went to the store, John gave a drink to",
    "Mechanistic interpretability looks inside neural networks to find the algorithms they "
    "learned.",
]


@pytest.fixture(scope="module")
def smollm2_bf16():
    return load_model("smollm2-135m", dtype="bfloat16")


@pytest.mark.slow
def test_bfloat16_scan_finds_the_same_induction_heads(smollm2, smollm2_bf16):
    assert smollm2_bf16.cfg.dtype == torch.bfloat16 and smollm2_bf16.W_Q.dtype == torch.bfloat16
    full = scan_heads(smollm2, seq_len=30, batch=6)
    half = scan_heads(smollm2_bf16, seq_len=30, batch=6)
    assert [head[:2] for head in half.top("induction", 3)] == [
        head[:2] for head in full.top("induction", 3)
    ]
    for name, scores in full.scores.items():
        assert half.scores[name].dtype == torch.float32  # averaged in float32
        assert (half.scores[name] - scores).abs().max() < 0.02, name
    assert half.loss_by_position.dtype == torch.float32
    assert abs(half.loss_second_half - full.loss_second_half) < 0.1


@pytest.mark.slow
def test_bfloat16_lens_agrees_with_float32_on_the_top_token(smollm2, smollm2_bf16):
    agree = cells = 0
    for prompt in PROMPTS:
        full, half = logit_lens(smollm2, prompt), logit_lens(smollm2_bf16, prompt)
        assert half.entropy.dtype == torch.float32
        agree += (full.top_ids[..., 0] == half.top_ids[..., 0]).sum().item()
        cells += full.top_ids[..., 0].numel()
    assert agree / cells >= 0.95  # measured: 0.964 over these 4 prompts' 31 x 53 cells


def bfloat16_error_ratios(scratch: Transformer, library, truth) -> dict[str, float]:
    """For each component, the scratch model's bfloat16 error against float32 `truth` over
    PROMPTS, divided by the library's own bfloat16 error against the same truth (rms over every
    element of every prompt)."""
    squares = {}
    for prompt in PROMPTS:
        tokens = library.to_tokens(prompt)
        with torch.no_grad():
            exact, _ = reference_activations(truth, tokens)
            theirs, _ = reference_activations(library, tokens)
            logits, ours = scratch(tokens, return_activations=True)
        ours["logits"] = logits
        for name in component_names(scratch):
            ours_err = (ours[name].float() - exact[name]).pow(2).sum().item()
            theirs_err = (theirs[name].float() - exact[name]).pow(2).sum().item()
            before = squares.get(name, (0.0, 0.0))
            squares[name] = (before[0] + ours_err, before[1] + theirs_err)
    return {
        name: (ours / theirs) ** 0.5 if theirs else (1.0 if not ours else float("inf"))
        for name, (ours, theirs) in squares.items()
    }


@pytest.mark.slow
def test_bfloat16_scratch_model_is_as_accurate_as_the_library_in_bfloat16(smollm2, smollm2_bf16):
    """In bfloat16 (8 significant bits) the two models round the same operations, but a CPU's
    kernels choose the order of each sum by the operands' layout (TransformerLens multiplies by a
    contiguous copy of W_O, fused with b_O), so the two trajectories differ by an ulp in the first
    layer and drift apart: comparing them to each other measures the hardware, not the model (on one
    CPU they agreed exactly, on this AMD one they do not). What does not depend on the kernels is
    how far each lands from the float32 model: the same roundings in another order are a random walk
    of the same size. Measured over PROMPTS on this CPU: the scratch model's error is 0.90-1.82x the
    library's (the highest on late layers' attention patterns, whose errors are smallest); a missing
    1/sqrt(d_head) makes the first pattern's 200x. The bound is 2.5x."""
    scratch = Transformer.from_hooked(smollm2_bf16)
    assert next(scratch.parameters()).dtype == torch.bfloat16
    ratios = bfloat16_error_ratios(scratch, smollm2_bf16, smollm2)
    assert len(ratios) == len(component_names(scratch))
    assert ratios["embed"] == 1.0  # the same rounded weights
    worse = {name: round(ratio, 2) for name, ratio in ratios.items() if ratio > 2.5}
    assert not worse, worse
    # and a bug shows: no 1/sqrt(d_head)
    for block in scratch.blocks:
        block.attn.cfg = dataclasses.replace(block.attn.cfg, attn_scale=1.0)
    assert bfloat16_error_ratios(scratch, smollm2_bf16, smollm2)["blocks.0.pattern"] > 20


def test_devices_and_dtypes_this_machine_lacks_are_refused(tmp_path, capsys):
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        load_model("random:tiny", device="tpu")
    with pytest.raises(InputError, match="unknown dtype 'int8'"):
        load_model("random:tiny", dtype="int8")
    assert load_model("random:tiny", device="auto").cfg.device in ("cpu", "cuda")
    out = tmp_path / "out"
    assert main(["predict", "--model", "random:tiny", "--dtype", "float64"]) == 2
    assert "invalid choice: 'float64'" in capsys.readouterr().err
    for command in [
        ["tune-lens", "--model", "random:tiny", "--dtype", "bfloat16", "--out", str(out)],
        ["lens", "--model", "random:tiny", "--prompt", "Hi", "--tuned", "auto", "--dtype",
         "float16", "--out", str(out)],
    ]:  # fmt: skip
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "float32 weights" in err[0]
    if not torch.cuda.is_available():
        code = main(["heads", "--model", "random:tiny", "--device", "cuda", "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "sees no CUDA GPU" in err[0]
    assert not out.exists()


def test_a_model_in_float16_runs_every_reduction_in_float32():
    model = load_model("random:llama-tiny", dtype="float16")
    assert model.cfg.dtype == torch.float16
    scan = scan_heads(model, seq_len=8, batch=2)
    assert all(score.dtype == torch.float32 for score in scan.scores.values())
    assert torch.isfinite(scan.loss_by_position).all()
    lens = logit_lens(model, "Hello there")
    assert lens.kl_to_final.dtype == torch.float32 and torch.isfinite(lens.kl_to_final).all()


@pytest.mark.slow
def test_bfloat16_direct_logit_attribution_adds_up(smollm2, smollm2_bf16):
    """The parts are summed in float64 from bfloat16 activations; the total is the model's own
    bfloat16 logit difference, so the two may differ by the rounding of the two bfloat16 logits
    (half an ulp each, at most eps * (|a| + |b|) / 2: 0.13 here) and no more.

    How far the bfloat16 total is from the float32 one is the bfloat16 model's own error, which
    depends on the CPU's kernels: 5.3125 against 5.287 on one machine, 5.625 on this CI's AVX2 EPYC
    (0.34 off, 1.8 times the rms error of a difference of two of its logits). That is
    TransformerLens's and torch's precision, not the decomposition's, so the test checks the
    total against an independent bfloat16 forward instead, and the ranking of heads against
    float32."""
    from mechlab.analysis.dla import logit_attribution

    prompt = PROMPTS[2]
    full = logit_attribution(smollm2, prompt, answer=" Mary", wrong=" John")
    half = logit_attribution(smollm2_bf16, prompt, answer=" Mary", wrong=" John")
    tokens = smollm2_bf16.to_tokens(prompt)
    with torch.no_grad():
        logits = smollm2_bf16(tokens)[0, -1]
    answer = logits[smollm2_bf16.to_single_token(" Mary")].double()
    wrong = logits[smollm2_bf16.to_single_token(" John")].double()
    assert half.total == (answer - wrong).item()
    rounding = torch.finfo(torch.bfloat16).eps * (answer.abs() + wrong.abs()).item() / 2
    assert abs(half.sum_of_parts - half.total) <= rounding
    assert half.dtype == "bfloat16" and abs(half.sum_of_parts - half.total) <= half.tolerance
    assert half.top_heads(1)[0][:2] == full.top_heads(1)[0][:2] == (23, 3)

"""Head scan: hand-built patterns with known answers, TransformerLens's head detector as the
reference, real induction heads in SmolLM2, bounded memory, and bad input."""

import pytest
import torch
from torch.testing import assert_close
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.head_detector import (
    compute_head_attention_similarity_score,
    get_duplicate_token_head_detection_pattern,
    get_induction_head_detection_pattern,
    get_previous_token_head_detection_pattern,
)

from mechlab import InputError, load_model
from mechlab.analysis.heads import (
    SCORE_NAMES,
    copying_scores,
    ordinary_token_ids,
    pattern_scores,
    repeated_tokens,
    scan_heads,
)
from mechlab.models.hooked import quiet_hooked_deprecation

L = 6  # seq_len of the hand-built patterns
T = 2 * L + 1


def one_hot_pattern(key_of_query) -> torch.Tensor:
    """[1, 1, T, T] pattern where query q puts all its attention on key_of_query(q)."""
    pattern = torch.zeros(1, 1, T, T)
    for q in range(T):
        pattern[0, 0, q, key_of_query(q)] = 1.0
    return pattern


def test_perfect_induction_pattern_scores_one():
    # Second-half queries attend to the token after the earlier copy; the rest rest on BOS.
    scores = pattern_scores(one_hot_pattern(lambda q: q - L + 1 if q > L else 0), L)
    assert scores["induction"].item() == 1.0
    assert scores["duplicate_token"].item() == 0.0
    assert scores["previous_token"].item() == pytest.approx(
        1 / (T - 1)
    )  # only q=1 attends to BOS = q-1


def test_perfect_previous_token_pattern():
    scores = pattern_scores(one_hot_pattern(lambda q: max(q - 1, 0)), L)
    assert scores["previous_token"].item() == 1.0
    assert scores["induction"].item() == 0.0
    assert scores["current_token"].item() == 0.0


def test_duplicate_current_and_first_token_patterns():
    assert (
        pattern_scores(one_hot_pattern(lambda q: q - L if q > L else 0), L)[
            "duplicate_token"
        ].item()
        == 1.0
    )
    assert pattern_scores(one_hot_pattern(lambda q: q), L)["current_token"].item() == 1.0
    assert pattern_scores(one_hot_pattern(lambda q: 0), L)["first_token"].item() == 1.0


def test_uniform_attention_gives_the_hand_computed_value():
    pattern = torch.tril(torch.ones(T, T))
    pattern = (pattern / pattern.sum(-1, keepdim=True))[None, None]
    expected_induction = (
        sum(1 / (q + 1) for q in range(L + 1, T)) / L
    )  # query q spreads over q+1 keys
    expected_previous = sum(1 / (q + 1) for q in range(1, T)) / (T - 1)
    scores = pattern_scores(pattern, L)
    assert scores["induction"].item() == pytest.approx(expected_induction, rel=1e-6)
    assert scores["duplicate_token"].item() == pytest.approx(expected_induction, rel=1e-6)
    assert scores["previous_token"].item() == pytest.approx(expected_previous, rel=1e-6)


def test_repeated_tokens_structure_and_reproducibility():
    model = load_model("random:tiny")
    tokens = repeated_tokens(model, seq_len=20, batch=3, seed=7)
    assert tokens.shape == (3, 41)
    assert (tokens[:, 0] == model.tokenizer.bos_token_id).all()
    assert torch.equal(tokens[:, 1:21], tokens[:, 21:])
    assert torch.equal(tokens, repeated_tokens(model, seq_len=20, batch=3, seed=7))
    assert not torch.equal(tokens, repeated_tokens(model, seq_len=20, batch=3, seed=8))
    assert not set(tokens[:, 1:].flatten().tolist()) & set(model.tokenizer.all_special_ids)


@pytest.mark.slow
def test_smollm2_draws_no_control_tokens(smollm2):
    ids = set(ordinary_token_ids(smollm2).tolist())
    assert 1 not in ids and 2 not in ids  # <|im_start|>, <|im_end|>
    assert len(ids) > 49000
    tokens = repeated_tokens(smollm2, seq_len=50, batch=10, seed=0)
    assert tokens[0, :4].tolist() == repeated_tokens(smollm2)[0, :4].tolist()  # the defaults


def reference_tl_scores(model: HookedTransformer, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """TransformerLens's own pattern builders and similarity score, one sequence and head at a time,
    averaged over sequences as detect_head's list mode does."""
    builders = {
        "previous_token": get_previous_token_head_detection_pattern,
        "duplicate_token": get_duplicate_token_head_detection_pattern,
        "induction": get_induction_head_detection_pattern,
    }
    results = {
        f"tl_{h}_{m}": torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        for h in builders
        for m in ["mul", "abs"]
    }
    for sequence in tokens:
        _, cache = model.run_with_cache(sequence[None], remove_batch_dim=True)
        for head_type, build in builders.items():
            detection = build(sequence[None].cpu())
            for layer in range(model.cfg.n_layers):
                for head in range(model.cfg.n_heads):
                    for measure in ["mul", "abs"]:
                        results[f"tl_{head_type}_{measure}"][layer, head] += (
                            compute_head_attention_similarity_score(
                                cache["pattern", layer][head],
                                detection,
                                exclude_bos=False,
                                exclude_current_token=False,
                                error_measure=measure,
                            )
                            / len(tokens)
                        )
    return results


@pytest.mark.numerics
@pytest.mark.parametrize("spec", ["random:tiny", "random:llama-tiny@3"])
def test_tl_scores_agree_with_transformer_lens_head_detector(spec):
    model = load_model(spec)
    tokens = repeated_tokens(model, seq_len=12, batch=4, seed=1)
    tokens[1, 5] = tokens[1, 3]  # a repeat inside r, so the duplicate patterns have extra entries
    tokens[1, 12 + 5] = tokens[1, 3]
    scan = scan_heads(model, tokens, chunk_size=3)
    for name, expected in reference_tl_scores(model, tokens).items():
        assert_close(scan.scores[name], expected, atol=1e-5, rtol=0, msg=name)


@pytest.mark.numerics
@pytest.mark.slow
def test_smollm2_has_induction_heads_and_learns_in_context(smollm2):
    scan = scan_heads(smollm2, seq_len=50, batch=10)
    assert set(scan.scores) == set(SCORE_NAMES)
    assert all(value.shape == (30, 9) for value in scan.scores.values())
    heads = scan.heads_above("induction", 0.4)
    assert len(heads) >= 3 and heads[0][2] > 0.7
    assert scan.loss_second_half < 0.5 * scan.loss_first_half
    expected = reference_tl_scores(smollm2, scan.tokens[:2])
    two = scan_heads(smollm2, scan.tokens[:2])
    for name in ["tl_induction_mul", "tl_induction_abs", "tl_previous_token_mul"]:
        assert_close(two.scores[name], expected[name], atol=1e-5, rtol=0, msg=name)


@pytest.mark.numerics
def test_chunking_does_not_change_the_scores():
    model = load_model("random:llama-tiny")
    tokens = repeated_tokens(model, seq_len=10, batch=5)
    whole, chunked = scan_heads(model, tokens), scan_heads(model, tokens, chunk_size=2)
    for name in SCORE_NAMES:
        assert_close(whole.scores[name], chunked.scores[name], atol=1e-6, rtol=1e-5)
    assert_close(whole.loss_by_position, chunked.loss_by_position)


def test_copying_score_of_an_identity_ov_circuit_is_one():
    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=8,
        n_heads=2,
        d_head=8,
        d_vocab=16,
        n_ctx=8,
        act_fn="relu",
        attn_only=True,
    )
    with quiet_hooked_deprecation():
        model = HookedTransformer(cfg)
    with torch.no_grad():
        model.embed.W_E.copy_(torch.randn(16, 8))
        model.unembed.W_U.copy_(model.embed.W_E.T)  # W_E W_U: positive semi-definite
        model.blocks[0].attn.W_V.copy_(torch.eye(8).expand(2, 8, 8))
        model.blocks[0].attn.W_O[0].copy_(torch.eye(8))
        model.blocks[0].attn.W_O[1].copy_(-torch.eye(8))  # the anti-copying head
    assert_close(copying_scores(model), torch.tensor([[1.0, -1.0]]), atol=1e-5, rtol=0)


DEEP_MODEL = """
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from mechlab.analysis.heads import scan_heads
from mechlab.analysis.attention import attention_patterns
cfg = HookedTransformerConfig(n_layers=24, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=300,
                              n_ctx=1024, act_fn="gelu_new", normalization_type="LN")
model = HookedTransformer(cfg).eval()
torch.manual_seed(0)
repeat = torch.randint(1, 300, (2, 500)).repeat(1, 2)
tokens = torch.cat([torch.zeros(2, 1, dtype=torch.long), repeat], 1)
with torch.inference_mode():
    model(tokens[:, :8])  # warm up the allocator and lazy initialisation
"""
RUNS = {
    "cache": "model.run_with_cache(tokens, names_filter=lambda name: name.endswith('pattern'))",
    "forward": "model(tokens)",
    "scan": "scan_heads(model, tokens)",
    # every layer's pattern for a view, cut to the last 256 positions as it is produced
    "views": "attention_patterns(model, tokens[:1], list(range(24)), last=256)",
}


def peak_memory_increase(mode: str) -> int:
    """Peak resident memory added by one run, in a fresh process (mechlab.memory)."""
    from mechlab.memory import peak_memory_increase

    return peak_memory_increase(DEEP_MODEL, f"with torch.inference_mode():\n    {RUNS[mode]}")


@pytest.mark.slow
def test_peak_memory_is_bounded_on_a_deep_model_with_long_sequences():
    """24 layers x 1001 tokens: all patterns together are 770 MB, one layer's 32 MB. The scan's peak
    stays near a plain forward pass's (which holds one layer's scores and pattern at a time)."""
    forward = peak_memory_increase("forward")
    # The checker can fail: keeping every layer's pattern, as a cache does, is far above the bound.
    assert peak_memory_increase("cache") > 3 * forward
    scanned = peak_memory_increase("scan")
    assert scanned < 1.5 * forward, f"scan {scanned / 1e6:.0f} MB, forward {forward / 1e6:.0f} MB"
    viewed = peak_memory_increase("views")  # one sequence where the forward pass had two
    assert viewed < forward, f"views {viewed / 1e6:.0f} MB, forward {forward / 1e6:.0f} MB"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(seq_len=200), "context window of 256"),
        (dict(seq_len=0), "seq_len must be"),
        (dict(batch=0), "batch must be"),
    ],
)
def test_bad_scan_shapes(kwargs, message):
    with pytest.raises(InputError, match=message):
        scan_heads(load_model("random:tiny"), **kwargs)


def test_unknown_score_name_and_unrepeated_tokens():
    model = load_model("random:tiny")
    scan = scan_heads(model, seq_len=5, batch=2)
    with pytest.raises(InputError, match=r"unknown score 'inductoin'.*induction"):
        scan.top("inductoin")
    tokens = repeated_tokens(model, seq_len=5, batch=2)
    tokens[0, -1] = (tokens[0, -1] + 1) % 256
    with pytest.raises(InputError, match="not repeated"):
        scan_heads(model, tokens)


HEADS_KEYS = {
    "model",
    "n_layers",
    "n_heads",
    "seq_len",
    "batch",
    "seed",
    "threshold",
    "scores",
    "induction_heads",
    "loss_by_position",
    "loss_first_half",
    "loss_second_half",
}


def test_cli_heads_writes_json_figures_and_view(tmp_path):
    import json

    from mechlab.cli import main

    out = tmp_path / "out"
    assert (
        main(
            [
                "heads",
                "--model",
                "random:llama-tiny",
                "--seq-len",
                "8",
                "--batch",
                "3",
                "--threshold",
                "0.0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "heads.json").read_text())
    assert set(report) == HEADS_KEYS
    assert (
        report["model"],
        report["n_layers"],
        report["n_heads"],
        report["seq_len"],
        report["batch"],
    ) == ("random:llama-tiny", 2, 4, 8, 3)
    assert set(report["scores"]) == set(SCORE_NAMES)
    assert len(report["scores"]["induction"]) == 2 and len(report["scores"]["induction"][0]) == 4
    assert len(report["loss_by_position"]) == 16
    scores = [score for _, _, score in report["induction_heads"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 8  # threshold 0: every head
    names = {p.name for p in out.iterdir()}
    assert {
        "heads_induction.png",
        "heads_previous_token.png",
        "loss_by_position.png",
        "heads.html",
    } <= names


def test_cli_heads_several_models_make_a_mosaic(tmp_path):
    from mechlab.cli import main

    out = tmp_path / "out"
    assert (
        main(
            [
                "heads",
                "--model",
                "random:tiny",
                "--model",
                "random:llama-tiny",
                "--seq-len",
                "5",
                "--batch",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "induction_mosaic.png").exists()
    assert (out / "random_tiny" / "heads.json").exists() and (
        out / "random_llama-tiny" / "heads.json"
    ).exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--seq-len", "500"], "context window of 256"),
        (["--batch", "0"], "argument --batch: must be at least 1, got 0"),
        (["--seq-len", "0"], "argument --seq-len: must be at least 1, got 0"),
        (["--batch", "1000000000"], "of memory but"),
        (["--threshold", "2"], "argument --threshold: must lie in [0, 1]"),
    ],
)
def test_cli_heads_bad_input_leaves_nothing(tmp_path, capsys, args, message):
    from mechlab.cli import main

    out = tmp_path / "out"
    assert main(["heads", "--model", "random:tiny", "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cli_heads_unwritable_out(tmp_path, capsys):
    from mechlab.cli import main

    (tmp_path / "file").write_text("x")
    assert (
        main(
            [
                "heads",
                "--model",
                "random:tiny",
                "--seq-len",
                "4",
                "--batch",
                "1",
                "--out",
                str(tmp_path / "file"),
            ]
        )
        == 2
    )
    assert "cannot write to output directory" in capsys.readouterr().err


def test_result_fields_are_shape_checked():
    """The dataclass's jaxtyping annotations are checked at construction (the test run's hook):
    a loss curve that does not have one entry per predicted position is refused."""
    from jaxtyping import TypeCheckError

    from mechlab.analysis.heads import HeadScan

    tokens = torch.zeros(2, 9, dtype=torch.long)
    common = dict(model="m", n_layers=1, n_heads=1, seq_len=4, batch=2, seed=0, tokens=tokens)
    HeadScan(**common, loss_by_position=torch.zeros(8))
    with pytest.raises(TypeCheckError):
        HeadScan(**common, loss_by_position=torch.zeros(9))


def test_copying_scores_are_computed_once_per_model_until_its_weights_change():
    """The scan's copying score depends on the weights alone: a second scan reuses it, and
    changing a weight in place (as an optimizer does) computes it again."""
    import mechlab.analysis.heads as heads_module

    model = load_model("random:tiny")
    calls = {"n": 0}
    import mechlab.analysis.weights as weights_module

    original = weights_module.copying_scores

    def counted(*args):
        calls["n"] += 1
        return original(*args)

    weights_module.copying_scores = counted
    try:
        first = heads_module.copying_scores(model)
        second = heads_module.copying_scores(model)
        assert calls["n"] == 1 and torch.equal(first, second)
        with torch.no_grad():
            model.blocks[0].attn.W_O[0].mul_(-1)
        third = heads_module.copying_scores(model)
        assert calls["n"] == 2 and not torch.equal(first, third)
    finally:
        weights_module.copying_scores = original
